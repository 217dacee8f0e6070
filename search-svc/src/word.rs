//! One query word when ranking by relevance: the documents of one part (the word's fuzzy set, or
//! its exact term when it has no typo tolerance), scored by the sum of every part that holds them.
//!
//! Why not a `BooleanQuery` of `Should` clauses: its union keeps a window of 4096 document ids
//! and, at each seek of the intersection of the query's words, decodes and BM25-scores every
//! posting of every part in the next window, although the intersection keeps a few of them.
//! Profiling at 1M products showed that union at 40 % of a relevance query. Here the other parts
//! are only moved to, and scored on, the documents the whole query matches: a skip-list seek
//! each. The parts must all be subsets of the matching one, so that the matches are the union's.

use tantivy::query::{EnableScoring, Explanation, Query, Scorer, Weight};
use tantivy::{DocId, DocSet, Score, SegmentReader, TantivyError};

/// Matches what `parts[matching]` matches; scores `0 + parts[0] + parts[1] + ...` over the parts
/// holding the document, in that order (the order tantivy's union adds them in, so that scores
/// are the same to the bit).
#[derive(Debug)]
pub(crate) struct WordQuery {
    parts: Vec<Box<dyn Query>>,
    matching: usize,
}

impl Clone for WordQuery {
    fn clone(&self) -> WordQuery {
        let parts = self.parts.iter().map(|part| part.box_clone()).collect();
        WordQuery { parts, matching: self.matching }
    }
}

impl WordQuery {
    /// Every part must match a subset of what `parts[matching]` matches.
    pub(crate) fn new(parts: Vec<Box<dyn Query>>, matching: usize) -> WordQuery {
        assert!(matching < parts.len(), "part {matching} of {} does not exist", parts.len());
        WordQuery { parts, matching }
    }
}

impl Query for WordQuery {
    fn weight(&self, scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        let parts =
            self.parts.iter().map(|part| part.weight(scoring)).collect::<tantivy::Result<_>>()?;
        Ok(Box::new(WordWeight { parts, matching: self.matching }))
    }
}

struct WordWeight {
    parts: Vec<Box<dyn Weight>>,
    matching: usize,
}

impl Weight for WordWeight {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        let parts = self
            .parts
            .iter()
            .map(|part| part.scorer(reader, boost))
            .collect::<tantivy::Result<_>>()?;
        Ok(Box::new(WordScorer { parts, matching: self.matching }))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        let mut scorer = self.scorer(reader, 1.0)?;
        if scorer.seek(doc) == doc {
            Ok(Explanation::new("WordQuery, sum of the parts holding the document", scorer.score()))
        } else {
            Err(TantivyError::InvalidArgument(format!("document {doc} does not match")))
        }
    }
}

struct WordScorer {
    parts: Vec<Box<dyn Scorer>>,
    matching: usize,
}

impl DocSet for WordScorer {
    fn advance(&mut self) -> DocId {
        self.parts[self.matching].advance()
    }

    fn seek(&mut self, target: DocId) -> DocId {
        self.parts[self.matching].seek(target)
    }

    fn doc(&self) -> DocId {
        self.parts[self.matching].doc()
    }

    fn size_hint(&self) -> u32 {
        self.parts[self.matching].size_hint()
    }
}

impl Scorer for WordScorer {
    fn score(&mut self) -> Score {
        let doc = self.doc();
        let mut score = 0.0;
        for (index, part) in self.parts.iter_mut().enumerate() {
            // The other parts only ever move forward, to documents the query matches.
            if index == self.matching || (part.doc() <= doc && part.seek(doc) == doc) {
                score += part.score();
            }
        }
        score
    }
}
