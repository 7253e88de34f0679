"""Drop-ins for the pipelines people already run: LlamaIndex, Haystack and LangChain over Qdrant.

Import the framework's module itself (``prime_retriever.integrations.llama_index``, ``.haystack``,
``.langchain``); each needs its extra (``pip install 'prime-retriever[llama-index]'``). This package
imports none of them: the framework-neutral parts (``payload_schema``, ``foreign_store``,
``foreign_retriever``, ``retriever_thread``, ``conversation``) need only the core.
See docs/integrations.md.
"""
