//! shardd: the shardkit daemon (in progress; see the issues).

fn main() {}
