//! Git sources: one task per GitRepo that fetches on its poll interval or when asked to,
//! builds the bundles that changed, and hands them to the fleet index.

pub mod git;
