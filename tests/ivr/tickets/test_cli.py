"""`hotline tickets ...` against a real Redis, through CliRunner and as a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner, Result

from ivr.cli.tickets import tickets
from ivr.tickets.model import Candidate, Priority, Ticket, Turn
from ivr.tickets.store import TicketStore
from tests.ivr.conftest import WriteConfig
from tests.ivr.tickets.peers import make_ticket
from tests.peers import RedisServer


@pytest.fixture
def config(write_config: WriteConfig, redis_server: RedisServer) -> Path:
    return write_config({"carrier-a": "127.0.0.1:5999"}, redis_url=redis_server.url)


@pytest.fixture
def saved(redis_client: redis.Redis) -> list[Ticket]:
    store = TicketStore(redis_client)
    tickets_ = [
        make_ticket(created_at=1000.0, caller="+861380000001", category="printers"),
        make_ticket(created_at=2000.0, caller="+861380000002", category="mixers",
                    priority=Priority.P1, priority_reasons=("safety ('smoke'): P3 -> P1",),
                    transcript=(Turn("bot", "How can I help?"),
                                Turn("caller", "smoke from the mixer")),
                    candidates=(Candidate("mixer-smell", "Mixer smells", 0.42, "mixers",
                                          Priority.P3),)),
    ]
    for ticket in tickets_:
        store.add(ticket)
    return tickets_


def run(config: Path, *args: str) -> Result:
    return CliRunner().invoke(tickets, [*args, "--config", str(config)], prog_name="tickets")


def test_list_shows_newest_first(config: Path, saved: list[Ticket]) -> None:
    result = run(config, "list")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["ID", "OPENED", "PRI", "STATUS", "DUE", "CALLER", "CATEGORY",
                                "HELPDESK"]
    assert [line.split()[0] for line in lines[1:]] == [saved[1].id, saved[0].id]
    assert "P1" in lines[1] and "open" in lines[1] and "mixers" in lines[1]


def test_list_json_and_status_filter(config: Path, saved: list[Ticket]) -> None:
    assert run(config, "ack", saved[0].id).exit_code == 0
    data = json.loads(run(config, "list", "--json").output)
    assert [d["uid"] for d in data] == [saved[1].uid, saved[0].uid]
    assert data[1]["status"] == "acked" and data[1]["acked_at"].endswith("+00:00")
    assert data[1]["created_at"] == "1970-01-01T00:16:40.000+00:00"
    acked = json.loads(run(config, "list", "--status", "acked", "--json").output)
    assert [d["id"] for d in acked] == [saved[0].id]
    assert run(config, "list", "--status", "resolved").output == \
        "No tickets with status resolved.\n"


def test_show_in_full_and_as_json(config: Path, saved: list[Ticket]) -> None:
    ticket = saved[1]
    typed = ticket.id.replace("-", " ")  # as a caller might read it out
    result = run(config, "show", typed)
    assert result.exit_code == 0, result.output
    assert f"id:                {ticket.id}" in result.output
    assert "spoken as:         " + " ".join(ticket.id[:4]) in result.output
    assert "  safety ('smoke'): P3 -> P1" in result.output
    assert "  caller: smoke from the mixer" in result.output
    assert "  0.42  mixer-smell: Mixer smells (category mixers, priority P3)" in result.output
    data = json.loads(run(config, "show", ticket.id, "--json").output)
    assert data["uid"] == ticket.uid and data["transcript"][1]["text"] == "smoke from the mixer"


def test_ack_then_resolve(config: Path, saved: list[Ticket], redis_client: redis.Redis) -> None:
    ticket = saved[0]
    result = run(config, "ack", ticket.id)
    assert (result.exit_code, result.output) == (0, f"Ticket {ticket.id} acked.\n")
    result = run(config, "resolve", ticket.id.replace("-", ""))
    assert (result.exit_code, result.output) == (0, f"Ticket {ticket.id} resolved.\n")
    assert TicketStore(redis_client).get(ticket.id).status == "resolved"


@pytest.mark.parametrize(("args", "message"), [
    (["show", "1234-5678"], "Error: no ticket 1234-5678"),
    (["ack", "1234-5678"], "Error: no ticket 1234-5678"),
    (["show", "T-42"], "Error: 'T-42' is not a ticket id: expected 8 digits such as 4729-1830"),
    (["resolve", "12"], "is not a ticket id"),
    (["list", "--status", "closed"], "Invalid value for '--status'"),
])
def test_bad_input_exits_2_with_one_sentence(config: Path, saved: list[Ticket], args: list[str],
                                            message: str) -> None:
    result = run(config, *args)
    assert result.exit_code == 2
    assert message in result.output


def test_wrong_moves_exit_2(config: Path, saved: list[Ticket]) -> None:
    ticket = saved[0]
    run(config, "ack", ticket.id)
    result = run(config, "ack", ticket.id)
    assert (result.exit_code, result.output) == (2, f"Error: ticket {ticket.id} is already acked\n")
    run(config, "resolve", ticket.id)
    result = run(config, "ack", ticket.id)
    assert result.exit_code == 2
    assert result.output == f"Error: ticket {ticket.id} is resolved; it cannot become acked\n"


def test_unreadable_ticket_exits_1(config: Path, redis_client: redis.Redis) -> None:
    redis_client.set("hotline:ticket:1111-2222", '{"id": 5}')
    result = run(config, "show", "1111-2222")
    assert result.exit_code == 1
    assert "ticket in Redis cannot be read" in result.output


def test_unreachable_redis_exits_1_as_a_real_process(write_config: WriteConfig,
                                                      tmp_path: Path) -> None:
    config = write_config({"carrier-a": "127.0.0.1:5999"},
                          redis_url=f"unix://{tmp_path / 'nothing.sock'}")
    done = subprocess.run(
        [sys.executable, "-c", "from ivr.cli.tickets import tickets; tickets()",
         "list", "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("Error: cannot reach Redis at unix://")
    assert "Traceback" not in done.stderr
