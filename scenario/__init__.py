"""The scenario: seeded plans of who talks to whom and what goes wrong (topology, attackers,
crashes, churn, topology changes), drawn alike by both runtimes from the experiment seed."""
