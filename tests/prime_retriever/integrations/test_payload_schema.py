"""Where each framework keeps ids, titles and texts (payloads as the frameworks write them)."""

from __future__ import annotations

import json
import uuid

import pytest

from prime_retriever.integrations.payload_schema import (
    PayloadSchema,
    get_path,
    haystack_schema,
    langchain_schema,
    llama_index_schema,
    parse_point_id,
)


def _haystack_id(doc_id: str) -> str:
    return uuid.uuid5(uuid.UUID("3896d314-1e95-4a3a-b45a-945f9f0b541d"), doc_id).hex


def test_get_path_descends_into_json_strings() -> None:
    payload = {"_node_content": json.dumps({"text": "the text", "metadata": {"a": 1}}), "meta": {"title": "T"}}
    assert get_path(payload, ("_node_content", "text")) == "the text"
    assert get_path(payload, ("_node_content", "metadata", "a")) == 1
    assert get_path(payload, ("meta", "title")) == "T"
    assert get_path(payload, ("meta", "missing")) is None
    assert get_path({"x": "not json"}, ("x", "y")) is None
    assert get_path({"x": 3}, ("x", "y")) is None


def test_llama_index_layout() -> None:
    schema = llama_index_schema()
    assert schema.vector_name == "text-dense" and llama_index_schema(None).vector_name is None
    node_id = str(uuid.uuid4())
    payload = {"title": "Demon Dice", "_node_content": json.dumps({"id_": node_id, "text": "a dice game"})}
    doc = schema.document(node_id, payload)
    assert (doc.id, doc.title, doc.text) == (node_id, "Demon Dice", "a dice game")
    assert schema.point_id(node_id) == node_id


def test_haystack_layout_maps_its_ids_to_point_ids() -> None:
    schema = haystack_schema(_haystack_id)
    assert schema.vector_name is None and haystack_schema(_haystack_id, use_sparse_embeddings=True).vector_name
    payload = {"id": "doc-7", "content": "text", "meta": {"title": "T"}}
    assert schema.doc_id(_haystack_id("doc-7"), payload) == "doc-7"
    assert schema.point_id("doc-7") == _haystack_id("doc-7")
    assert schema.doc_id(12, {}) == "12"  # no id in the payload: the point id
    with pytest.raises(ValueError, match="id_to_point"):
        PayloadSchema("x", None, ("t",), ("c",), id_key="id")


def test_langchain_layout_reads_the_page_without_its_title() -> None:
    schema = langchain_schema()
    assert schema.vector_name is None  # "" is LangChain's unnamed vector
    assert langchain_schema("dense").vector_name == "dense"
    payload = {"page_content": "Demon Dice: a dice game", "metadata": {"title": "Demon Dice"}}
    assert schema.text(payload) == "a dice game"
    assert schema.text({"page_content": "no title here", "metadata": {}}) == "no title here"
    assert schema.title({"page_content": 3}) == "" and schema.text({"page_content": 3}) == ""


def test_point_ids() -> None:
    assert parse_point_id("42") == 42
    u = str(uuid.uuid4())
    assert parse_point_id(u) == u
