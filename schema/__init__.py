"""The data contracts between fedgossip's parts: the metrics records every node, the Flower
server, the launcher and the reports share (`records`), and the checks every untrusted model
passes before use (`tensors`)."""
