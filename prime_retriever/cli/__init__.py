"""The ``prime-retriever`` command line: the entry point and one module per subcommand."""
