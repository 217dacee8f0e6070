//! Typo-tolerant matching of one query word: tantivy's fuzzy term query, except that indexed
//! words containing a digit never match.
//!
//! Why not `FuzzyTermQuery`: a Levenshtein automaton of distance 2 accepts any two-byte start,
//! so walking the term dictionary with it visits every model code and number ("a100", "250")
//! there is, the largest part of a catalog's vocabulary, and profiling showed that walk as the
//! largest cost of a query. Model codes and numbers are not words a typo should reach anyway
//! ("a100" one edit from "a101" is another product), so the walk stops at the first digit.

use std::sync::OnceLock;

use levenshtein_automata::{Distance, LevenshteinAutomatonBuilder, DFA, SINK_STATE};
use tantivy::query::{AutomatonWeight, EnableScoring, Query, Weight};
use tantivy::schema::Field;

/// Matches documents holding an indexed word within `distance` edits of `word` (a transposition
/// is one edit) that contains no ASCII digit. Scores a constant, like every automaton query.
#[derive(Clone, Debug)]
pub(crate) struct WordFuzzyQuery {
    field: Field,
    word: String,
    distance: u8,
}

impl WordFuzzyQuery {
    /// `distance` is 1 or 2.
    pub(crate) fn new(field: Field, word: &str, distance: u8) -> WordFuzzyQuery {
        assert!((1..=2).contains(&distance), "edit distance {distance} is not 1 or 2");
        WordFuzzyQuery { field, word: word.to_string(), distance }
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
        let dfa = builder(self.distance).build_dfa(&self.word);
        Ok(Box::new(AutomatonWeight::new(self.field, WordsOnly(dfa))))
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
