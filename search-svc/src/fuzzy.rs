//! Typo-tolerant matching of one query word: tantivy's fuzzy term query, except that indexed
//! words containing a digit never match.
//!
//! Why not `FuzzyTermQuery`: a Levenshtein automaton of distance 2 accepts any two-byte start,
//! so walking the term dictionary with it visits every model code and number ("a100", "250")
//! there is, the largest part of a catalog's vocabulary, and profiling showed that walk as the
//! largest cost of a query. Model codes and numbers are not words a typo should reach anyway
//! ("a100" one edit from "a101" is another product), so the walk stops at the first digit.

use std::sync::{Arc, OnceLock};

use levenshtein_automata::{Distance, LevenshteinAutomatonBuilder, DFA, SINK_STATE};
use tantivy::query::{EnableScoring, Explanation, Query, Scorer, Weight};
use tantivy::schema::Field;
use tantivy::{DocId, Score, SegmentReader};

use crate::cache::{
    explain_constant, Cached, MatchCache, MatchKey, MatchScorer, MatchSet, SegmentTerm,
};

/// Matches documents holding an indexed word within `distance` edits of `word` (a transposition
/// is one edit) that contains no ASCII digit. Scores a constant, like every automaton query.
///
/// Both the words a segment's dictionary holds within reach and the documents of each come from
/// the [`MatchCache`] when they are there.
#[derive(Clone, Debug)]
pub(crate) struct WordFuzzyQuery {
    field: Field,
    word: String,
    distance: u8,
    cache: Arc<MatchCache>,
}

impl WordFuzzyQuery {
    /// `distance` is 1 or 2.
    pub(crate) fn new(
        field: Field,
        word: &str,
        distance: u8,
        cache: Arc<MatchCache>,
    ) -> WordFuzzyQuery {
        assert!((1..=2).contains(&distance), "edit distance {distance} is not 1 or 2");
        WordFuzzyQuery { field, word: word.to_string(), distance, cache }
    }

    /// The words of the segment's dictionary within reach, by walking it with the automaton.
    fn expand(&self, reader: &SegmentReader) -> tantivy::Result<Vec<SegmentTerm>> {
        let automaton = WordsOnly(builder(self.distance).build_dfa(&self.word));
        let inverted_index = reader.inverted_index(self.field)?;
        let mut stream = inverted_index.terms().search(&automaton).into_stream()?;
        let mut terms = Vec::new();
        while stream.advance() {
            terms.push((stream.key().into(), stream.value().clone()));
        }
        Ok(terms)
    }
}

/// Building a parametric automaton for distance 2 takes milliseconds; build each once.
fn builder(distance: u8) -> &'static LevenshteinAutomatonBuilder {
    static BUILDERS: [OnceLock<LevenshteinAutomatonBuilder>; 2] =
        [OnceLock::new(), OnceLock::new()];
    BUILDERS[usize::from(distance - 1)]
        .get_or_init(|| LevenshteinAutomatonBuilder::new(distance, true))
}

impl Query for WordFuzzyQuery {
    fn weight(&self, _scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(self.clone()))
    }
}

impl Weight for WordFuzzyQuery {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        let key = MatchKey::Fuzzy {
            field: self.field,
            word: self.word.as_str().into(),
            distance: self.distance,
        };
        let found = self.cache.fuzzy(reader.segment_id(), key, || {
            let terms = self.expand(reader)?;
            if terms.len() <= 1 {
                return Ok(Cached::Terms(terms.into()));
            }
            // Several words within reach (a brand among its siblings, "jacket" and "racket"):
            // their union is kept rather than rebuilt at every search.
            let sets = terms
                .iter()
                .map(|term| self.cache.segment_term_set(reader, self.field, term))
                .collect::<tantivy::Result<Vec<_>>>()?;
            Ok(Cached::Set(MatchSet::union(sets, reader.max_doc())))
        })?;
        let set = match found {
            Cached::Set(set) => set,
            Cached::Terms(terms) => match terms.first() {
                Some(term) => self.cache.segment_term_set(reader, self.field, term)?,
                None => Arc::new(MatchSet::Sparse(Box::new([]))),
            },
        };
        Ok(Box::new(MatchScorer::new(set, boost)))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        explain_constant(self.scorer(reader, 1.0)?, doc, "WordFuzzyQuery")
    }
}
/// The Levenshtein DFA with every digit leading to the dead state.
struct WordsOnly(DFA);

impl tantivy_fst::Automaton for WordsOnly {
    type State = u32;

    fn start(&self) -> u32 {
        self.0.initial_state()
    }

    fn is_match(&self, state: &u32) -> bool {
        matches!(self.0.distance(*state), Distance::Exact(_))
    }

    fn can_match(&self, state: &u32) -> bool {
        *state != SINK_STATE
    }

    fn accept(&self, state: &u32, byte: u8) -> u32 {
        if byte.is_ascii_digit() {
            SINK_STATE
        } else {
            self.0.transition(*state, byte)
        }
    }
}
