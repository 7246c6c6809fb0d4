"""The gossip peer, one job per module; the transport (wire, senders, service, identity, security,
event loop) is `transport/`.

- `peer`: `GossipPeer`, the node built from its config (learner, server, parts), and the process
  entry point (`python -m fedgossip.client.gossip.peer NODE.toml`); `host`, `actor`: several peers
  in one process, in one Ray actor.
- `sync_schedule`, `async_schedule`: the two round schedules that drive a peer.
- `own_model`: training (a non-finite one undone) and the merge of a round (a bad one discarded).
- `rounds`, `fair`, `merge`: the round plan of a strategy (who gets the model, how models merge).
- `links`: channels and pushes to the neighbours; `inbox`, `async_inbox`: what arrived from them.
- `neighbours`: the wait for the neighbours' models and catch-up; `crash`: crash and rejoin;
  `resampling`: the neighbours linked in a round.
- `round_record`: the metrics records and scenario events a peer emits.
"""
