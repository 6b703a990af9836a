"""The conversation view shows a chat's newest messages, however long the chat."""
from __future__ import annotations

import asyncio

from shared.whatsapp import assistant


class ChatTable:
    """The two reads `conversation` makes, over one chat's rows in memory."""

    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows

    async def partition(self, table: str, pk: str):
        for row in self.rows if table == assistant.MESSAGES else []:
            yield row["message_id"], row

    async def get(self, table: str, pk: str, rk: str) -> dict | None:
        return None


def test_a_chat_of_more_than_ten_thousand_messages_shows_its_newest_fifty():
    rows = [{"chat_id": "c", "message_id": f"m{n:05}", "direction": "in", "text": f"line {n}", "received_at": n,
             "status": "answered"} for n in range(10_100)]
    view = asyncio.run(assistant.conversation(ChatTable(rows), "c"))
    assert [m["text"] for m in view["messages"]] == [f"line {n}" for n in range(10_050, 10_100)]
