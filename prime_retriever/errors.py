"""Typed errors raised by prime_retriever.

Every error the library raises on purpose derives from :class:`PrimeError`, so callers can
catch the whole family with one ``except``. Input-validation errors also derive from
``ValueError`` so that generic code that expects a ``ValueError`` keeps working.
"""

from __future__ import annotations


class PrimeError(Exception):
    """Base class of every error raised by prime_retriever."""


class PredictorError(PrimeError, ValueError):
    """Bad input to the predictor (shape, dtype, device, non-finite values) or a bad predictor output."""


class CheckpointError(PrimeError):
    """A checkpoint is missing, corrupted, tampered with, of an unknown version, or does not fit its config."""


class EncoderError(PrimeError):
    """The text encoder failed, or its dimension does not match what the caller expects."""


class StoreError(PrimeError):
    """The vector store refused an operation (e.g. a collection built with another encoder)."""


class RetrieverError(PrimeError):
    """A retrieval could not be served: the store stayed unreachable after bounded retries."""


class DataError(PrimeError, ValueError):
    """A dataset file is malformed, or a train/eval split leaks examples."""
