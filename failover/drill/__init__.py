"""The trunk-switch drill: force the backup trunk, prove it with real calls, put it back.

A drill (`run.Drill`) runs inside `hotline serve`, which owns the trunks' SIP
endpoints: `hotline drill run` asks for one through Redis and follows its
progress; the monthly schedule starts one directly, on the node that first takes the
schedule's time (its *slot*), so N nodes run one drill per scheduled time. Steps:

1. take the cross-node lock (`{p}:drill:lock`, with an expiry); refuse if held;
2. restore what a drill on a node that died left behind, if anything;
3. record every trunk's override, and keep that record in Redis until the end;
4. force the drill's trunk with reason ``drill``, expiring with the lock, so live
   traffic moves to it as it would in a real failover;
5. place the test calls through that trunk only, each checked end to end;
6. always put the drill trunk's override back as recorded (an operator's change to
   another trunk meanwhile is left alone and reported), also when a step fails or
   the drill is interrupted; then release the lock and keep the report.

Keys (``{p}`` is the prefix):

    {p}:drill:lock          string: the running drill's id; expires
    {p}:drill:state         string, JSON: the overrides recorded by the running drill
    {p}:drill:requests      list, JSON: drills asked for by `hotline drill run`
    {p}:drill:slot:{time}   string: which drill and node took the schedule's {time}
                            (UTC, 20260101T030000Z); expires after a week
    {p}:drill:{id}:events   list, JSON: progress of drill {id}, for the CLI; expires
    {p}:drill:{id}:cancel   string: asks drill {id} to stop; expires
    {p}:drill:{id}          string, JSON: the report of drill {id}
    {p}:drills              sorted set of drill ids by start time

Modules: `report` (what a drill found), `store` (its state in Redis), `run` (one
drill), `calls` (a test call, both ends) and `service` (drills inside `hotline serve`:
requests from the CLI, the schedule, the responder).
"""
