"""Call records: one JSON document per call in Redis, indexed by start time, saved as
the call moves by a `RecordWriter` so a live call's record shows where it is, and how
it sounds; while Redis cannot take them, they wait in a spool on disk.

    {p}:call:{id}         string, JSON CallRecord; expires after RECORD_RETENTION_S
    {p}:calls             sorted set of call ids, scored by start time
    {p}:quality:{trunk}   sorted set of the latest QUALITY_KEPT measured legs the trunk
                          carried (JSON: call, leg, at and the leg's quality figures),
                          scored by the end of the call; written with the call's final
                          record, so every node's calls are in it
    {p}:live:{node}       hash: call id -> the node's run, for each call whose latest
                          record is open (not ended); written with the record, so the
                          calls a dead node left open can be found and closed
    {p}:dialog:{id}       string, JSON: a bridged call's SIP dialogs (both legs'
                          `LegState`), written with its record while it is up, so
                          another node can take the call up if its node dies

`model.py` holds the record, `store.py` the keys above, `writer.py` the writer and
`spool.py` the spool (``<data_dir>/calls/spool.jsonl``).
"""

from ivr.records.model import ANSWERED, CallRecord, LegQualities, measured_legs
from ivr.records.spool import SPOOL_PATH, RecordSpool
from ivr.records.store import QUALITY_KEPT, RECORD_RETENTION_S, CallStore, live_key
from ivr.records.writer import SAVE_WAIT_S, RecordWriter, WriterState

__all__ = [
    "ANSWERED", "QUALITY_KEPT", "RECORD_RETENTION_S", "SAVE_WAIT_S", "SPOOL_PATH", "CallRecord",
    "CallStore", "LegQualities", "RecordSpool", "RecordWriter", "WriterState", "live_key",
    "measured_legs",
]
