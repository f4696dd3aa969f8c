// GRPC module. See README.md for the architecture.
