"""The data contracts between fedgossip's parts: what a metrics record holds (`fields`, the one
declaration), how records are made and read back (`records`), the events every process sends the
launcher (`events`), JSON lines written whole and read back safely (`lines`), and the checks every
untrusted model passes before use (`tensors`)."""
