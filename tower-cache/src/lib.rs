//! Multi-tier response caching for [tower] services.
#![cfg_attr(docsrs, feature(doc_cfg))]
