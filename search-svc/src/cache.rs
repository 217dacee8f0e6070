//! The documents matching one term, and the terms one fuzzy word expands to, per segment, kept
//! between searches in a memory-bounded least-recently-used cache.
//!
//! A fuzzy word costs a walk of the term dictionary with its Levenshtein automaton and the decoding
//! of every posting list it reaches into a bitset of the whole segment; the deliverability filter
//! decodes the postings of 3–5 warehouses, each holding a sixth of the catalog. Profiling at 1M
//! products showed building those bitsets as the largest single cost of a query, yet the same few
//! hundred words and ten warehouses come back query after query.
//!
//! The cache holds two things: the expansion of a fuzzy word into the indexed terms it reaches
//! (small: a typo'd word costs a few dozen bytes), and the documents of each such term. Keeping
//! documents per term rather than per word lets every misspelling of "lantern" share the set of
//! "lantern", and every combination of warehouses share the ten warehouse sets; a word reaching
//! several terms, or several warehouses, is the union of their sets, built per search.
//!
//! A segment's postings never change (deletes live in a separate bitset that the collector
//! applies), so what is computed for a segment stays exact for as long as the segment is
//! searchable: entries are keyed by segment id, and those of segments that leave the searcher are
//! dropped at each reload. Deleted documents stay in the sets, as in the bitsets tantivy builds.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tantivy::index::SegmentId;
use tantivy::postings::TermInfo;
use tantivy::query::{EnableScoring, Explanation, Query, Scorer, Weight};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::{DocId, DocSet, Score, SegmentReader, TantivyError, Term, TERMINATED};

/// What a cache entry stands for, within one segment.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum MatchKey {
    /// The documents holding `term` (its serialized value bytes) in `field`.
    Term { field: Field, term: Box<[u8]> },
    /// The indexed words of `field` within `distance` edits of `word`, as `fuzzy.rs` defines them.
    Fuzzy { field: Field, word: Box<str>, distance: u8 },
}

impl MatchKey {
    fn bytes(&self) -> usize {
        match self {
            MatchKey::Term { term, .. } => term.len(),
            MatchKey::Fuzzy { word, .. } => word.len(),
        }
    }
}

/// An indexed term of a segment: its value bytes and where its postings are.
pub(crate) type SegmentTerm = (Box<[u8]>, TermInfo);

/// A cache entry: the documents of a term; for a fuzzy word, the terms it reaches when there is
/// at most one (whose documents are an entry of their own, shared by every word reaching it), or
/// the union of their documents when there are several.
#[derive(Clone)]
pub(crate) enum Cached {
    Set(Arc<MatchSet>),
    Terms(Arc<[SegmentTerm]>),
}

impl Cached {
    fn bytes(&self) -> usize {
        match self {
            Cached::Set(set) => set.bytes(),
            Cached::Terms(terms) => {
                terms.iter().map(|(term, _)| term.len() + std::mem::size_of::<SegmentTerm>()).sum()
            }
        }
    }
}

/// The documents of one segment matching a term or a union of terms.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum MatchSet {
    /// Sorted document ids: used while they take less room than a bitset.
    Sparse(Box<[DocId]>),
    /// One bit per document of the segment, and how many are set.
    Dense { words: Box<[u64]>, len: u32 },
}

impl MatchSet {
    /// The set of `docs`, which are sorted and distinct, in a segment of `max_doc` documents.
    pub(crate) fn from_sorted(docs: Vec<DocId>, max_doc: DocId) -> MatchSet {
        if is_sparse(docs.len(), max_doc) {
            return MatchSet::Sparse(docs.into_boxed_slice());
        }
        let mut words = vec![0u64; words_for(max_doc)].into_boxed_slice();
        for &doc in &docs {
            words[(doc / 64) as usize] |= 1 << (doc % 64);
        }
        MatchSet::Dense { words, len: doc_count(docs.len()) }
    }

    /// The documents in any of `sets`, in a segment of `max_doc` documents.
    pub(crate) fn union(sets: Vec<Arc<MatchSet>>, max_doc: DocId) -> Arc<MatchSet> {
        if sets.len() == 1 {
            return sets.into_iter().next().expect("one set");
        }
        let upper_bound: usize = sets.iter().map(|set| set.len() as usize).sum();
        let all_sparse = sets.iter().all(|set| matches!(**set, MatchSet::Sparse(_)));
        if all_sparse && is_sparse(upper_bound, max_doc) {
            let mut docs = Vec::with_capacity(upper_bound);
            for set in &sets {
                if let MatchSet::Sparse(set_docs) = &**set {
                    docs.extend_from_slice(set_docs);
                }
            }
            docs.sort_unstable();
            docs.dedup();
            return Arc::new(MatchSet::Sparse(docs.into_boxed_slice()));
        }
        let mut words = vec![0u64; words_for(max_doc)].into_boxed_slice();
        for set in &sets {
            match &**set {
                MatchSet::Sparse(docs) => {
                    for &doc in &**docs {
                        words[(doc / 64) as usize] |= 1 << (doc % 64);
                    }
                }
                MatchSet::Dense { words: set_words, .. } => {
                    for (word, set_word) in words.iter_mut().zip(set_words.iter()) {
                        *word |= set_word;
                    }
                }
            }
        }
        let len = words.iter().map(|word| word.count_ones()).sum();
        Arc::new(MatchSet::Dense { words, len })
    }

    /// How many documents are in the set.
    pub(crate) fn len(&self) -> u32 {
        match self {
            MatchSet::Sparse(docs) => doc_count(docs.len()),
            MatchSet::Dense { len, .. } => *len,
        }
    }

    /// Heap bytes, counted against the cache's budget.
    pub(crate) fn bytes(&self) -> usize {
        match self {
            MatchSet::Sparse(docs) => std::mem::size_of_val(&**docs),
            MatchSet::Dense { words, .. } => std::mem::size_of_val(&**words),
        }
    }
}

/// A sparse set costs 32 bits per document, a dense one a bit per document of the segment.
fn is_sparse(docs: usize, max_doc: DocId) -> bool {
    docs * 32 <= words_for(max_doc) * 64
}

fn words_for(max_doc: DocId) -> usize {
    max_doc.div_ceil(64) as usize
}

fn doc_count(docs: usize) -> u32 {
    u32::try_from(docs).expect("a segment holds fewer than 2^32 documents")
}

/// The documents of `term_info`'s postings in `field`.
fn read_set(
    reader: &SegmentReader,
    field: Field,
    term_info: &TermInfo,
) -> tantivy::Result<MatchSet> {
    let inverted_index = reader.inverted_index(field)?;
    let mut postings =
        inverted_index.read_block_postings_from_terminfo(term_info, IndexRecordOption::Basic)?;
    let mut docs = Vec::with_capacity(term_info.doc_freq as usize);
    loop {
        let block = postings.docs();
        if block.is_empty() {
            break;
        }
        docs.extend_from_slice(block);
        postings.advance();
    }
    Ok(MatchSet::from_sorted(docs, reader.max_doc()))
}

/// Counters of a [`MatchCache`], for benchmarks and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MatchCacheStats {
    /// Lookups (of a term's documents or of a fuzzy word's terms) answered from the cache.
    pub hits: u64,
    /// Lookups that had to read the index.
    pub misses: u64,
    /// Entries dropped to stay within the byte budget (not counting dropped segments).
    pub evictions: u64,
    /// Entries held now.
    pub entries: u64,
    /// Bytes held now, keys and bookkeeping included.
    pub bytes: u64,
}

struct Entry {
    value: Cached,
    /// Value of [`State::clock`] at the last use: the smallest is evicted first.
    last_used: u64,
    bytes: usize,
}

#[derive(Default)]
struct State {
    by_segment: HashMap<SegmentId, HashMap<MatchKey, Entry>>,
    clock: u64,
    bytes: usize,
    stats: MatchCacheStats,
}

/// Per-segment term sets and fuzzy expansions, least recently used dropped first once `bytes_max`
/// is reached.
///
/// One mutex, held only to look up or insert: entries are built outside it, so two searches
/// missing the same key at once both build it (the second insert wins, with identical content).
pub(crate) struct MatchCache {
    state: Mutex<State>,
    bytes_max: usize,
}

impl std::fmt::Debug for MatchCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MatchCache")
            .field("bytes_max", &self.bytes_max)
            .field("stats", &self.stats())
            .finish()
    }
}

impl MatchCache {
    /// A cache holding at most `bytes_max` bytes; 0 disables it (every lookup reads the index).
    pub(crate) fn new(bytes_max: usize) -> MatchCache {
        MatchCache { state: Mutex::new(State::default()), bytes_max }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("a thread panicked while holding the match cache")
    }

    pub(crate) fn stats(&self) -> MatchCacheStats {
        let state = self.state();
        let mut stats = state.stats;
        stats.entries = state.by_segment.values().map(|entries| entries.len() as u64).sum();
        stats.bytes = state.bytes as u64;
        stats
    }

    /// The documents of `term` in the segment `reader`.
    pub(crate) fn term_set(
        &self,
        reader: &SegmentReader,
        term: &Term,
    ) -> tantivy::Result<Arc<MatchSet>> {
        let field = term.field();
        self.set(reader, field, term.serialized_value_bytes(), || {
            Ok(reader.inverted_index(field)?.get_term_info(term)?)
        })
    }

    /// The documents of a term of `field` found in the segment `reader`'s dictionary.
    pub(crate) fn segment_term_set(
        &self,
        reader: &SegmentReader,
        field: Field,
        (term, term_info): &SegmentTerm,
    ) -> tantivy::Result<Arc<MatchSet>> {
        self.set(reader, field, term, || Ok(Some(term_info.clone())))
    }

    fn set(
        &self,
        reader: &SegmentReader,
        field: Field,
        term: &[u8],
        term_info: impl FnOnce() -> tantivy::Result<Option<TermInfo>>,
    ) -> tantivy::Result<Arc<MatchSet>> {
        let key = MatchKey::Term { field, term: term.into() };
        let cached = self.get_or_build(reader.segment_id(), key, || {
            let set = match term_info()? {
                Some(term_info) => read_set(reader, field, &term_info)?,
                None => MatchSet::Sparse(Box::new([])),
            };
            Ok(Cached::Set(Arc::new(set)))
        })?;
        match cached {
            Cached::Set(set) => Ok(set),
            Cached::Terms(_) => unreachable!("a term key holds a set"),
        }
    }

    /// What a fuzzy word matches in the segment `segment`, made by `build` on a miss. `key` must
    /// be a [`MatchKey::Fuzzy`].
    pub(crate) fn fuzzy(
        &self,
        segment: SegmentId,
        key: MatchKey,
        build: impl FnOnce() -> tantivy::Result<Cached>,
    ) -> tantivy::Result<Cached> {
        debug_assert!(matches!(key, MatchKey::Fuzzy { .. }));
        self.get_or_build(segment, key, build)
    }

    fn get_or_build(
        &self,
        segment: SegmentId,
        key: MatchKey,
        build: impl FnOnce() -> tantivy::Result<Cached>,
    ) -> tantivy::Result<Cached> {
        {
            let mut state = self.state();
            state.clock += 1;
            let now = state.clock;
            let found =
                state.by_segment.get_mut(&segment).and_then(|entries| entries.get_mut(&key));
            if let Some(entry) = found {
                entry.last_used = now;
                let value = entry.value.clone();
                state.stats.hits += 1;
                return Ok(value);
            }
            state.stats.misses += 1;
        }
        let value = build()?;
        let bytes = value.bytes() + key.bytes() + std::mem::size_of::<(MatchKey, Entry)>();
        if bytes > self.bytes_max {
            return Ok(value);
        }
        let mut state = self.state();
        let last_used = state.clock;
        let entry = Entry { value: value.clone(), last_used, bytes };
        if let Some(replaced) = state.by_segment.entry(segment).or_default().insert(key, entry) {
            state.bytes -= replaced.bytes;
        }
        state.bytes += bytes;
        if state.bytes > self.bytes_max {
            self.evict(&mut state);
        }
        Ok(value)
    }

    /// Drops the least recently used entries until an eighth of the budget is free, so that the
    /// scan over every entry happens once per many insertions, not at each.
    fn evict(&self, state: &mut State) {
        let target = self.bytes_max - self.bytes_max / 8;
        let mut by_age: Vec<(u64, SegmentId, MatchKey)> = state
            .by_segment
            .iter()
            .flat_map(|(segment, entries)| {
                entries.iter().map(|(key, entry)| (entry.last_used, *segment, key.clone()))
            })
            .collect();
        by_age.sort_unstable_by_key(|(last_used, _, _)| *last_used);
        for (_, segment, key) in by_age {
            if state.bytes <= target {
                break;
            }
            let entries = state.by_segment.get_mut(&segment).expect("listed above");
            let entry = entries.remove(&key).expect("listed above");
            if entries.is_empty() {
                state.by_segment.remove(&segment);
            }
            state.bytes -= entry.bytes;
            state.stats.evictions += 1;
        }
    }

    /// Forgets segments that are no longer searchable (merged away or deleted).
    pub(crate) fn retain(&self, live: &HashSet<SegmentId>) {
        let mut state = self.state();
        let mut freed = 0;
        state.by_segment.retain(|segment, entries| {
            let keep = live.contains(segment);
            if !keep {
                freed += entries.values().map(|entry| entry.bytes).sum::<usize>();
            }
            keep
        });
        state.bytes -= freed;
    }
}

/// Matches the documents holding any of `terms` (all in one field), like a `TermQuery` for one
/// term or a `TermSetQuery` for several, from the cache. Scores the boost it is given, a
/// constant; wrap it in a `ConstScoreQuery` for a filter.
#[derive(Clone, Debug)]
pub(crate) struct AnyTermQuery {
    terms: Vec<Term>,
    cache: Arc<MatchCache>,
}

impl AnyTermQuery {
    pub(crate) fn new(terms: Vec<Term>, cache: Arc<MatchCache>) -> AnyTermQuery {
        assert!(
            terms.windows(2).all(|pair| pair[0].field() == pair[1].field()),
            "an AnyTermQuery searches one field"
        );
        AnyTermQuery { terms, cache }
    }
}

impl Query for AnyTermQuery {
    fn weight(&self, _scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(self.clone()))
    }
}

impl Weight for AnyTermQuery {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        let sets = self
            .terms
            .iter()
            .map(|term| self.cache.term_set(reader, term))
            .collect::<tantivy::Result<Vec<_>>>()?;
        if sets.is_empty() {
            return Ok(Box::new(tantivy::query::EmptyScorer));
        }
        Ok(Box::new(MatchScorer::new(MatchSet::union(sets, reader.max_doc()), boost)))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        explain_constant(self.scorer(reader, 1.0)?, doc, "AnyTermQuery")
    }
}

/// The explanation of a constant-scoring match, or the error tantivy gives for a non-match.
pub(crate) fn explain_constant(
    mut scorer: Box<dyn Scorer>,
    doc: DocId,
    name: &'static str,
) -> tantivy::Result<Explanation> {
    if scorer.seek(doc) == doc {
        Ok(Explanation::new(name, scorer.score()))
    } else {
        Err(TantivyError::InvalidArgument(format!("document {doc} does not match")))
    }
}

/// Walks a shared [`MatchSet`], scoring a constant.
pub(crate) struct MatchScorer {
    set: Arc<MatchSet>,
    /// Sparse: index of the current document. Dense: index of the current 64-bit word.
    cursor: usize,
    /// Dense: the bits of the current word not yet visited.
    remaining: u64,
    doc: DocId,
    score: Score,
}

impl MatchScorer {
    pub(crate) fn new(set: Arc<MatchSet>, score: Score) -> MatchScorer {
        let remaining = match &*set {
            MatchSet::Sparse(_) => 0,
            MatchSet::Dense { words, .. } => words.first().copied().unwrap_or(0),
        };
        let mut scorer = MatchScorer { set, cursor: 0, remaining, doc: 0, score };
        scorer.doc = scorer.current();
        scorer
    }

    /// Dense: the lowest remaining bit of the current word or of a later non-empty one.
    fn next_dense(&mut self) -> DocId {
        let MatchSet::Dense { words, .. } = &*self.set else {
            unreachable!("next_dense on a sparse set")
        };
        while self.remaining == 0 {
            self.cursor += 1;
            match words.get(self.cursor) {
                Some(&word) => self.remaining = word,
                None => return TERMINATED,
            }
        }
        let bit = self.remaining.trailing_zeros();
        u32::try_from(self.cursor).expect("a word index of a segment fits u32") * 64 + bit
    }

    /// The document under the cursor, before any advance.
    fn current(&mut self) -> DocId {
        match &*self.set {
            MatchSet::Sparse(docs) => docs.get(self.cursor).copied().unwrap_or(TERMINATED),
            MatchSet::Dense { .. } => self.next_dense(),
        }
    }
}

impl DocSet for MatchScorer {
    fn advance(&mut self) -> DocId {
        if self.doc == TERMINATED {
            return TERMINATED;
        }
        match &*self.set {
            MatchSet::Sparse(docs) => {
                self.cursor += 1;
                self.doc = docs.get(self.cursor).copied().unwrap_or(TERMINATED);
            }
            MatchSet::Dense { .. } => {
                // Clear the current document's bit.
                self.remaining &= self.remaining - 1;
                self.doc = self.next_dense();
            }
        }
        self.doc
    }

    fn seek(&mut self, target: DocId) -> DocId {
        if self.doc >= target {
            return self.doc;
        }
        match &*self.set {
            MatchSet::Sparse(docs) => {
                // Galloping: targets are usually close ahead.
                let rest = &docs[self.cursor..];
                let mut bound = 1;
                while bound < rest.len() && rest[bound] < target {
                    bound *= 2;
                }
                let end = bound.min(rest.len());
                let start = bound / 2;
                self.cursor += start + rest[start..end].partition_point(|&doc| doc < target);
                self.doc = docs.get(self.cursor).copied().unwrap_or(TERMINATED);
            }
            MatchSet::Dense { words, .. } => {
                let word = (target / 64) as usize;
                if word >= words.len() {
                    self.cursor = words.len();
                    self.remaining = 0;
                    self.doc = TERMINATED;
                    return TERMINATED;
                }
                if word > self.cursor {
                    self.cursor = word;
                    self.remaining = words[word];
                }
                // Drop the bits below the target within its word.
                self.remaining &= u64::MAX << (target % 64);
                self.doc = self.next_dense();
            }
        }
        self.doc
    }

    fn doc(&self) -> DocId {
        self.doc
    }

    fn size_hint(&self) -> u32 {
        self.set.len()
    }
}

impl Scorer for MatchScorer {
    fn score(&mut self) -> Score {
        self.score
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(scorer: &mut MatchScorer) -> Vec<DocId> {
        let mut out = Vec::new();
        while scorer.doc() != TERMINATED {
            out.push(scorer.doc());
            scorer.advance();
        }
        out
    }

    fn sets(docs: &[DocId], max_doc: DocId) -> [Arc<MatchSet>; 2] {
        let sparse = Arc::new(MatchSet::Sparse(docs.to_vec().into_boxed_slice()));
        let mut words = vec![0u64; max_doc.div_ceil(64) as usize];
        for &doc in docs {
            words[(doc / 64) as usize] |= 1 << (doc % 64);
        }
        let len = u32::try_from(docs.len()).unwrap();
        let dense = Arc::new(MatchSet::Dense { words: words.into_boxed_slice(), len });
        [sparse, dense]
    }

    #[test]
    fn both_forms_walk_and_seek_alike() {
        let max_doc = 1000;
        let all: Vec<DocId> = (0..max_doc).filter(|doc| doc % 7 == 3 || doc % 64 == 63).collect();
        for set in sets(&all, max_doc) {
            assert_eq!(docs(&mut MatchScorer::new(Arc::clone(&set), 0.5)), all);
            assert_eq!(MatchScorer::new(Arc::clone(&set), 0.5).size_hint(), all.len() as u32);
            for target in [0, 1, 3, 4, 63, 64, 127, 128, 500, 998, 999, 1000, 5000] {
                let mut scorer = MatchScorer::new(Arc::clone(&set), 0.5);
                let expected = all.iter().copied().find(|&doc| doc >= target).unwrap_or(TERMINATED);
                assert_eq!(scorer.seek(target), expected, "seek {target}");
                assert_eq!(scorer.doc(), expected);
                let after = all.iter().copied().find(|&doc| doc > expected).unwrap_or(TERMINATED);
                if expected != TERMINATED {
                    assert_eq!(scorer.advance(), after, "advance after seek {target}");
                }
            }
            // Seeks in a row, each from where the last left off.
            let mut scorer = MatchScorer::new(Arc::clone(&set), 0.5);
            for target in (0..max_doc).step_by(37) {
                let expected = all.iter().copied().find(|&doc| doc >= target).unwrap_or(TERMINATED);
                assert_eq!(scorer.seek(target.max(scorer.doc())), expected.max(scorer.doc()));
            }
            assert!((scorer.score() - 0.5).abs() < f32::EPSILON);
        }
    }

    #[test]
    fn empty_sets_are_terminated() {
        for set in sets(&[], 130) {
            let mut scorer = MatchScorer::new(set, 1.0);
            assert_eq!(scorer.doc(), TERMINATED);
            assert_eq!(scorer.advance(), TERMINATED);
            assert_eq!(scorer.seek(5), TERMINATED);
        }
        let scorer = MatchScorer::new(Arc::new(MatchSet::from_sorted(Vec::new(), 0)), 1.0);
        assert_eq!(scorer.doc(), TERMINATED);
    }

    #[test]
    fn the_smaller_form_is_chosen() {
        assert!(matches!(MatchSet::from_sorted(vec![1, 5, 9], 1_000_000), MatchSet::Sparse(_)));
        let many: Vec<DocId> = (0..1000).step_by(2).collect();
        let dense = MatchSet::from_sorted(many.clone(), 1000);
        assert!(matches!(dense, MatchSet::Dense { len: 500, .. }));
        assert_eq!(docs(&mut MatchScorer::new(Arc::new(dense), 1.0)), many);
    }

    fn fuzzy(word: &str) -> MatchKey {
        MatchKey::Fuzzy { field: Field::from_field_id(0), word: word.into(), distance: 1 }
    }

    /// Looks `word` up, building `set` on a miss; says whether it missed.
    fn lookup(cache: &MatchCache, segment: SegmentId, word: &str, docs: u32) -> bool {
        let mut missed = false;
        cache
            .get_or_build(segment, fuzzy(word), || {
                missed = true;
                Ok(Cached::Set(Arc::new(MatchSet::Sparse((0..docs).collect()))))
            })
            .unwrap();
        missed
    }

    #[test]
    fn least_recently_used_entries_go_first_and_the_budget_holds() {
        let entry_bytes = 400 * 4 + 4 + std::mem::size_of::<(MatchKey, Entry)>();
        let cache = MatchCache::new(entry_bytes * 4);
        let segment = SegmentId::generate_random();
        for word in ["aaaa", "bbbb", "cccc", "dddd"] {
            assert!(lookup(&cache, segment, word, 400));
        }
        // "aaaa" is used again, so "bbbb" is now the oldest.
        assert!(!lookup(&cache, segment, "aaaa", 400));
        assert!(lookup(&cache, segment, "eeee", 400));
        // Over budget: the two oldest ("bbbb", "cccc") go, leaving an eighth of the budget free.
        let stats = cache.stats();
        assert!(stats.bytes <= (entry_bytes * 4) as u64, "{stats:?}");
        assert_eq!((stats.evictions, stats.entries), (2, 3), "{stats:?}");
        assert!(!lookup(&cache, segment, "aaaa", 400), "aaaa was used recently");
        assert!(!lookup(&cache, segment, "dddd", 400), "dddd is newer than cccc");
        assert!(lookup(&cache, segment, "bbbb", 400), "the least recently used entry was evicted");
        assert_eq!(cache.stats().hits, 3);
    }

    #[test]
    fn dropped_segments_free_their_entries() {
        let cache = MatchCache::new(1 << 20);
        let (kept, dropped) = (SegmentId::generate_random(), SegmentId::generate_random());
        for segment in [kept, dropped] {
            assert!(lookup(&cache, segment, "word", 10));
        }
        let both = cache.stats().bytes;
        cache.retain(&HashSet::from([kept]));
        assert_eq!(cache.stats().entries, 1);
        assert_eq!(cache.stats().bytes * 2, both);
        assert!(!lookup(&cache, kept, "word", 10));
        assert!(lookup(&cache, dropped, "word", 10));
    }

    #[test]
    fn a_zero_budget_caches_nothing() {
        let cache = MatchCache::new(0);
        let segment = SegmentId::generate_random();
        assert!(lookup(&cache, segment, "word", 10));
        assert!(lookup(&cache, segment, "word", 10));
        assert_eq!(cache.stats(), MatchCacheStats { misses: 2, ..MatchCacheStats::default() });
    }

    #[test]
    fn unions_count_each_document_once_in_either_form() {
        let max_doc = 10_000;
        let a = Arc::new(MatchSet::from_sorted((0..100).map(|n| n * 7).collect(), max_doc));
        let b = Arc::new(MatchSet::from_sorted((0..100).map(|n| n * 5).collect(), max_doc));
        let dense = Arc::new(MatchSet::from_sorted((0..max_doc).step_by(3).collect(), max_doc));
        assert!(matches!(*a, MatchSet::Sparse(_)) && matches!(*dense, MatchSet::Dense { .. }));
        let expected = |sets: &[&[u32]]| {
            let mut all: Vec<u32> = sets.iter().flat_map(|set| set.iter().copied()).collect();
            all.sort_unstable();
            all.dedup();
            all
        };
        let a_docs: Vec<u32> = (0..100).map(|n| n * 7).collect();
        let b_docs: Vec<u32> = (0..100).map(|n| n * 5).collect();
        let dense_docs: Vec<u32> = (0..max_doc).step_by(3).collect();
        let sparse_union = MatchSet::union(vec![Arc::clone(&a), Arc::clone(&b)], max_doc);
        let want = expected(&[&a_docs, &b_docs]);
        assert_eq!(sparse_union.len() as usize, want.len());
        assert_eq!(docs(&mut MatchScorer::new(sparse_union, 1.0)), want);
        let mixed = MatchSet::union(vec![a, b, dense], max_doc);
        let want = expected(&[&a_docs, &b_docs, &dense_docs]);
        assert!(matches!(*mixed, MatchSet::Dense { .. }));
        assert_eq!(mixed.len() as usize, want.len());
        assert_eq!(docs(&mut MatchScorer::new(mixed, 1.0)), want);
    }
}
