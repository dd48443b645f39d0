//! Deduplication: exact (xxh3-128 of normalized text) and near (MinHash + LSH bands +
//! union-find), with an audit table of every removal.
