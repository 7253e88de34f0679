"""The core package and the framework-neutral integration modules import no framework."""

from __future__ import annotations

import subprocess
import sys

NEUTRAL = ["conversation", "foreign_retriever", "foreign_store", "payload_schema", "retriever_thread"]


def test_no_framework_is_imported() -> None:
    code = (
        "import sys, prime_retriever, prime_retriever.integrations\n"
        + "".join(f"import prime_retriever.integrations.{m}\n" for m in NEUTRAL)
        + "print(sorted({m.split('.')[0] for m in sys.modules} & {'llama_index', 'haystack', "
        "'haystack_integrations', 'langchain_core', 'langchain_qdrant'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
