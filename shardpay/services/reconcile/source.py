"""Where a settlement file comes from: a file on disk, or the PSP's own for a day (``Psp.settlement_file``).
Either way it is read as it arrives, one line at a time, never held whole."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator
from datetime import date
from typing import Protocol

import psp
from shardpay.domain.settlement import MalformedFile

READ_HINT = 1 << 20


class BadInput(Exception):
    """The command was given something it cannot use (exit status 2); nothing was changed."""


class Source(Protocol):
    name: str  # for the stored run: 'psp' or the file's name

    def lines(self) -> AsyncGenerator[str, None]:
        """The file's lines without their line ends, header first; MalformedFile for what is not text lines."""
        ...


class FileSource:
    """A file on disk. Every line must end with a line end: a file that stops inside a line was cut short
    (the format has no trailer, so a cut between two lines cannot be seen; those lines come out missing)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.name = os.path.basename(path)

    async def lines(self) -> AsyncGenerator[str, None]:
        try:
            handle = await asyncio.to_thread(open, self.path, "rb")
        except OSError as exc:
            raise BadInput(f"cannot read settlement file {self.path!r}: {exc.strerror}") from None
        with handle:
            number = 0
            # About a megabyte of lines per read, in a thread: the loop is never blocked on the disk.
            while chunk := await asyncio.to_thread(handle.readlines, READ_HINT):
                for raw in chunk:
                    number += 1
                    yield _decoded(raw, number)


def _decoded(raw: bytes, number: int) -> str:
    if not raw.endswith(b"\n"):
        shown = raw.decode("utf-8", errors="replace")
        raise MalformedFile(number, None, shown, "ends without a line end: the file is truncated")
    try:
        text = raw[:-1].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedFile(number, None, raw[:-1].decode("utf-8", errors="replace"),
                            f"is not UTF-8 (byte {exc.start})") from None  # fmt: skip
    if "\x00" in text:
        raise MalformedFile(number, None, text.replace("\x00", "\\x00"), "contains a NUL byte")
    return text


class PspSource:
    """The PSP's file for ``day``, streamed: its adapter raises PspUnavailable if the stream breaks off."""

    name = "psp"

    def __init__(self, client: psp.Psp, day: date) -> None:
        self.client = client
        self.day = day

    async def lines(self) -> AsyncGenerator[str, None]:
        number = 0
        async for line in self.client.settlement_file(self.day):
            number += 1
            if "\x00" in line:
                raise MalformedFile(number, None, line.replace("\x00", "\\x00"), "contains a NUL byte")
            yield line
