// ProtoGenCore module. See README.md for the architecture.
