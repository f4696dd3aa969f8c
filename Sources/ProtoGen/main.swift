import ProtoGenCore
// Placeholder entry until the generator lands.
