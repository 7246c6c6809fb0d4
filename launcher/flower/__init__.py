"""The Flower engines: deployment, simulation and in-process runs of the fedgossip apps."""
