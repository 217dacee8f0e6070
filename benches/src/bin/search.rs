//! Search: how fast products are indexed and how long queries take at a fixed rate, on a
//! generated catalog (`surge-search-svc` alone, no HTTP).
//!
//! - Catalog: `--products` products generated deterministically (splitmix64, `--seed`) from word
//!   lists: a title of brand, adjective, noun and model code; a description of 8–15 words; one of
//!   40 category paths under 8 roots; one of 300 brands; colour, material and a numeric attribute;
//!   a log-uniform price; a rating for 80 %; stock in 1–3 of 10 warehouses for 85 %.
//! - Indexing: every product is upserted from one thread into an on-disk index (a temporary
//!   directory unless `--data-dir`), then one commit; products/s counts upserts and commit, not
//!   generation. Then the segments are merged into one (reported separately, as `merge_s`), which
//!   is what the index converges to after a bulk load and a quiet period.
//! - Queries: `--rate` queries/s on a fixed schedule shared by `--threads` threads for
//!   `--seconds`, from a mix drawn in advance, each query aimed at a random product: its noun,
//!   then up to two of its adjective, colour and brand, 15 % of words of 4+ letters with a
//!   one-letter typo; filters from that product (category root 30 %, brand 10 %, a price range
//!   around its price 15 %, colour 10 %), in stock 80 %, deliverable from 3–5 random warehouses
//!   30 %; order relevance 60 %, price up
//!   15 %, price down 10 %, rating 10 %, newest 5 %; 20 hits per page, 20 % on page 2 or 3.
//!   Latency (HdrHistogram) counts from each query's scheduled time, so a thread that falls behind
//!   shows it; `service_*` counts from when the query actually started.
//! - The match cache (`surge-search-svc`'s per-segment fuzzy expansions and term sets) is warm
//!   from the first pass over the query pool on: `match_cache_*` are its counters after the
//!   queries (the pool of 8192 queries is cycled, so most lookups are hits).
//! - Freshness: `--freshness-rounds` times, 50 upserts then `commit`; `commit_*` is the time from
//!   calling commit until the changes are searchable (the gateway commits every ~200 ms).
//!
//! Defaults (200k products) finish in about 30 s on 2 cores; the figure is
//! `--products 1000000` (about 75 s, 2 GiB resident). Targets: indexing ≥ 20k products/s, p99 < 10 ms at
//! 2k queries/s.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use clap::Parser;
use hdrhistogram::Histogram;
use surge_benches::{latency_histogram, nanos, per_second, record_clamped, seconds, SplitMix64};
use surge_search_svc::{ProductDoc, SearchIndex, SearchQuery, Sort};

/// Indexing rate and query latency at a fixed rate over a generated catalog.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Products generated and indexed (the figure is 1000000).
    #[arg(long, default_value_t = 200_000)]
    products: u64,
    /// Queries per second offered, in total, on a fixed schedule.
    #[arg(long, default_value_t = 2_000)]
    rate: u64,
    /// Seconds of queries.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Threads sharing the query schedule.
    #[arg(long, default_value_t = 2)]
    threads: u64,
    /// Rounds of 50 upserts + commit for the commit latency.
    #[arg(long, default_value_t = 100)]
    freshness_rounds: u64,
    /// Where the index goes; a fresh temporary directory by default. Must be empty.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

const ADJECTIVES: &[&str] = &[
    "compact",
    "wireless",
    "premium",
    "portable",
    "classic",
    "modern",
    "vintage",
    "ergonomic",
    "lightweight",
    "heavy",
    "smart",
    "digital",
    "organic",
    "waterproof",
    "foldable",
    "adjustable",
    "professional",
    "rechargeable",
    "silent",
    "powerful",
    "slim",
    "rugged",
    "deluxe",
    "essential",
    "elegant",
    "minimalist",
    "durable",
    "insulated",
    "cordless",
    "stainless",
    "handmade",
    "eco",
    "ultra",
    "mini",
    "large",
    "quick",
    "soft",
    "warm",
    "cool",
    "bright",
];

/// Category path and the nouns its titles use.
const CATEGORIES: &[(&str, &[&str])] = &[
    ("electronics/laptops", &["laptop", "notebook", "ultrabook", "chromebook"]),
    ("electronics/phones", &["smartphone", "phone", "handset"]),
    ("electronics/audio", &["headphones", "earbuds", "speaker", "soundbar", "amplifier"]),
    ("electronics/cameras", &["camera", "lens", "tripod", "camcorder"]),
    ("electronics/accessories", &["charger", "cable", "keyboard", "mouse", "adapter", "case"]),
    ("electronics/gaming", &["console", "controller", "headset", "joystick"]),
    ("home/kitchen", &["kettle", "toaster", "blender", "skillet", "knife", "mixer", "grinder"]),
    ("home/furniture", &["chair", "desk", "sofa", "shelf", "wardrobe", "stool"]),
    ("home/lighting", &["lamp", "lantern", "bulb", "chandelier"]),
    ("home/bedding", &["pillow", "duvet", "blanket", "mattress", "sheets"]),
    ("home/bath", &["towel", "mirror", "shower", "bathrobe"]),
    ("home/garden", &["hose", "shovel", "planter", "mower", "trimmer"]),
    ("sports/footwear", &["sneakers", "boots", "sandals", "cleats"]),
    ("sports/fitness", &["dumbbells", "kettlebell", "treadmill", "mat", "bands"]),
    ("sports/cycling", &["bicycle", "helmet", "pump", "saddle", "pedals"]),
    ("sports/camping", &["tent", "backpack", "stove", "hammock", "flashlight"]),
    ("sports/water", &["paddle", "kayak", "wetsuit", "goggles"]),
    ("sports/team", &["football", "basketball", "volleyball", "racket"]),
    ("fashion/outerwear", &["jacket", "coat", "parka", "raincoat", "vest"]),
    ("fashion/knitwear", &["sweater", "cardigan", "hoodie", "scarf"]),
    ("fashion/shoes", &["loafers", "heels", "slippers", "oxfords"]),
    ("fashion/accessories", &["wallet", "belt", "watch", "sunglasses", "handbag"]),
    ("fashion/denim", &["jeans", "shorts", "skirt"]),
    ("fashion/underwear", &["socks", "briefs", "tights"]),
    ("books/fiction", &["novel", "thriller", "anthology", "saga"]),
    ("books/reference", &["encyclopedia", "dictionary", "atlas", "handbook"]),
    ("books/children", &["storybook", "picturebook", "puzzlebook"]),
    ("books/cooking", &["cookbook", "recipes", "baking"]),
    ("toys/building", &["blocks", "bricks", "construction"]),
    ("toys/dolls", &["doll", "dollhouse", "figure"]),
    ("toys/games", &["boardgame", "puzzle", "cards", "chess"]),
    ("toys/outdoor", &["scooter", "trampoline", "swing", "kite"]),
    ("beauty/skincare", &["moisturizer", "serum", "cleanser", "sunscreen"]),
    ("beauty/hair", &["shampoo", "conditioner", "dryer", "straightener"]),
    ("beauty/fragrance", &["perfume", "cologne", "mist"]),
    ("grocery/coffee", &["espresso", "beans", "grounds", "capsules"]),
    ("grocery/tea", &["teabags", "matcha", "oolong", "chai"]),
    ("grocery/snacks", &["chips", "cookies", "crackers", "granola"]),
    ("pets/dogs", &["leash", "collar", "kibble", "kennel"]),
    ("pets/cats", &["litter", "scratcher", "catnip", "feeder"]),
];

const BRAND_HEADS: &[&str] = &[
    "ac", "bel", "cor", "dan", "el", "fal", "gor", "hal", "ir", "jun", "kal", "lum", "mor", "nor",
    "or", "pax", "quin", "ros", "sol", "tor",
];
const BRAND_TAILS: &[&str] = &[
    "ion", "tek", "ora", "vex", "line", "craft", "wave", "nova", "peak", "field", "works", "stone",
    "ex", "ia", "ware",
];

const COLORS: &[&str] = &[
    "black", "white", "silver", "grey", "red", "blue", "green", "yellow", "orange", "purple",
    "pink", "brown", "beige", "navy", "teal",
];
const MATERIALS: &[&str] = &[
    "steel",
    "aluminium",
    "plastic",
    "wood",
    "cotton",
    "wool",
    "leather",
    "glass",
    "bamboo",
    "ceramic",
];

const VOCABULARY: &[&str] = &[
    "designed",
    "for",
    "everyday",
    "use",
    "with",
    "a",
    "long",
    "lasting",
    "battery",
    "and",
    "fast",
    "charging",
    "perfect",
    "travel",
    "home",
    "office",
    "outdoor",
    "adventures",
    "built",
    "from",
    "high",
    "quality",
    "materials",
    "easy",
    "to",
    "clean",
    "comfortable",
    "fit",
    "all",
    "day",
    "includes",
    "carrying",
    "pouch",
    "warranty",
    "two",
    "years",
    "energy",
    "efficient",
    "quiet",
    "operation",
    "sleek",
    "finish",
    "fits",
    "most",
    "spaces",
    "gift",
    "ready",
    "packaging",
    "tested",
    "by",
    "experts",
    "award",
    "winning",
    "design",
    "improved",
    "grip",
    "extra",
    "storage",
    "compartment",
    "reinforced",
    "stitching",
    "breathable",
    "fabric",
    "nonstick",
    "coating",
    "dishwasher",
    "safe",
    "timer",
    "display",
    "touch",
    "controls",
    "bluetooth",
    "connectivity",
    "app",
    "support",
    "wide",
    "compatibility",
    "family",
    "friendly",
    "kids",
    "beginners",
    "experienced",
    "users",
    "limited",
    "edition",
    "bestseller",
    "new",
    "season",
    "collection",
    "recycled",
    "sustainable",
    "sourcing",
    "fair",
    "trade",
    "certified",
];

const WAREHOUSES: u64 = 10;
const PAGE_SIZE: usize = 20;
/// Distinct queries drawn in advance and cycled through.
const QUERY_POOL: usize = 8_192;
const FRESHNESS_BATCH: u64 = 50;

fn pick<'a>(rng: &mut SplitMix64, items: &[&'a str]) -> &'a str {
    items[usize::try_from(rng.below(items.len() as u64)).expect("a list index fits usize")]
}

fn brand(index: u64) -> String {
    let head = BRAND_HEADS[usize::try_from(index % BRAND_HEADS.len() as u64).unwrap_or(0)];
    let tail = BRAND_TAILS
        [usize::try_from(index / BRAND_HEADS.len() as u64).unwrap_or(0) % BRAND_TAILS.len()];
    let mut name = format!("{head}{tail}");
    name[..1].make_ascii_uppercase();
    name
}

fn brands_count() -> u64 {
    (BRAND_HEADS.len() * BRAND_TAILS.len()) as u64
}

fn product(seed: u64, product_id: u64) -> ProductDoc {
    let mut rng = SplitMix64::new(seed ^ product_id.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let (category, nouns) = CATEGORIES
        [usize::try_from(rng.below(CATEGORIES.len() as u64)).expect("a list index fits usize")];
    let brand = brand(rng.below(brands_count()));
    let noun = pick(&mut rng, nouns);
    let adjective = pick(&mut rng, ADJECTIVES);
    let model_letter = char::from(b'A' + u8::try_from(rng.below(26)).expect("below 26"));
    let title = format!("{brand} {adjective} {noun} {model_letter}{}", 100 + rng.below(900));
    let words = 8 + rng.below(8);
    let mut description = String::new();
    for n in 0..words {
        if n > 0 {
            description.push(' ');
        }
        description.push_str(if n == 3 { noun } else { pick(&mut rng, VOCABULARY) });
    }
    let color = pick(&mut rng, COLORS);
    let material = pick(&mut rng, MATERIALS);
    // Log-uniform between 5.00 and about 5000.00.
    let price_cents = (500.0 * 1000f64.powf(rng.below(1_000_000) as f64 / 1_000_000.0)) as i64;
    let rating = rng.percent(80).then(|| 1.0 + rng.below(41) as f64 / 10.0);
    let mut stock_warehouses = Vec::new();
    if rng.percent(85) {
        for _ in 0..=rng.below(3) {
            let warehouse = rng.below(WAREHOUSES);
            if !stock_warehouses.contains(&warehouse) {
                stock_warehouses.push(warehouse);
            }
        }
    }
    ProductDoc {
        product_id,
        title,
        description,
        brand,
        category: category.to_string(),
        attributes: vec![
            ("color".to_string(), color.to_string()),
            ("material".to_string(), material.to_string()),
            ("weight_g".to_string(), (50 + rng.below(5000)).to_string()),
        ],
        price_cents,
        currency: "EUR".to_string(),
        rating,
        created_at_unix: 1_700_000_000 + i64::try_from(product_id).unwrap_or(0) * 31,
        stock_warehouses,
    }
}

/// One letter replaced by the next in the alphabet: one edit.
fn with_typo(rng: &mut SplitMix64, word: &str) -> String {
    let mut bytes = word.as_bytes().to_vec();
    let at = usize::try_from(1 + rng.below(bytes.len() as u64 - 1)).expect("fits usize");
    bytes[at] = if bytes[at] == b'z' { b'a' } else { bytes[at] + 1 };
    String::from_utf8(bytes).expect("ASCII stays UTF-8")
}

/// A query for something that exists: words and filters taken from a random product, as a buyer
/// who has seen it would type them.
fn query(rng: &mut SplitMix64, seed: u64, products: u64) -> SearchQuery {
    let target = product(seed, 1 + rng.below(products));
    let title_words: Vec<String> = target.title.split(' ').map(str::to_lowercase).collect();
    let (brand_word, adjective, noun) = (&title_words[0], &title_words[1], &title_words[2]);
    let color = &target.attributes[0].1;
    let word_count = 1 + rng.below(3);
    let mut words = vec![noun.clone()];
    for _ in 1..word_count {
        let word = match rng.below(3) {
            0 => adjective,
            1 => color,
            _ => brand_word,
        };
        if !words.contains(word) {
            words.push(word.clone());
        }
    }
    for word in &mut words {
        if word.len() >= 4 && rng.percent(15) {
            *word = with_typo(rng, word);
        }
    }
    let mut query = SearchQuery {
        text: words.join(" "),
        limit: PAGE_SIZE,
        in_stock_only: rng.percent(80),
        ..SearchQuery::default()
    };
    if rng.percent(30) {
        let root = target.category.split('/').next().unwrap_or_default();
        query.category = Some(root.to_string());
    }
    if rng.percent(10) {
        query.brand = Some(target.brand.clone());
    }
    if rng.percent(15) {
        query.min_price_cents = Some(target.price_cents / 2);
        query.max_price_cents = Some(target.price_cents * 2);
    }
    if rng.percent(10) {
        query.attributes = vec![("color".to_string(), color.clone())];
    }
    if rng.percent(30) {
        let count = 3 + rng.below(3);
        query.deliverable_from = Some((0..count).map(|_| rng.below(WAREHOUSES)).collect());
    }
    query.sort = match rng.below(100) {
        0..=59 => Sort::Relevance,
        60..=74 => Sort::PriceAsc,
        75..=84 => Sort::PriceDesc,
        85..=94 => Sort::Rating,
        _ => Sort::Newest,
    };
    if rng.percent(20) {
        query.offset = PAGE_SIZE * usize::try_from(1 + rng.below(2)).unwrap_or(1);
    }
    query
}

struct ThreadResult {
    from_schedule: Histogram<u64>,
    service: Histogram<u64>,
    queries: u64,
    hits: u64,
    empty: u64,
}

fn run_queries(
    index: &SearchIndex,
    queries: &[SearchQuery],
    args: &Args,
) -> anyhow::Result<(Vec<ThreadResult>, Duration)> {
    let total = args.rate * args.seconds;
    let next = AtomicU64::new(0);
    let started = Instant::now();
    let results = thread::scope(|scope| {
        let workers: Vec<_> = (0..args.threads)
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<ThreadResult> {
                    let mut result = ThreadResult {
                        from_schedule: latency_histogram(),
                        service: latency_histogram(),
                        queries: 0,
                        hits: 0,
                        empty: 0,
                    };
                    loop {
                        // The threads take the next due query in turn, like a server's pool.
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= total {
                            break;
                        }
                        let due = started
                            + Duration::from_nanos(
                                u64::try_from(
                                    u128::from(n) * 1_000_000_000 / u128::from(args.rate),
                                )
                                .unwrap_or(u64::MAX),
                            );
                        let now = Instant::now();
                        if due > now {
                            thread::sleep(due - now);
                        }
                        let begun = Instant::now();
                        let query = &queries[usize::try_from(n).unwrap_or(0) % queries.len()];
                        let found = index.search(query).context("search")?;
                        let done = Instant::now();
                        record_clamped(&mut result.from_schedule, nanos(done - due));
                        record_clamped(&mut result.service, nanos(done - begun));
                        result.queries += 1;
                        result.hits += found.total;
                        result.empty += u64::from(found.total == 0);
                    }
                    Ok(result)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().expect("a query thread panicked"))
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    Ok((results, started.elapsed()))
}

fn micros(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1000.0
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.products > 0 && args.rate > 0 && args.threads > 0, "counts must be positive");
    let temporary = tempfile::tempdir().context("creating a temporary directory")?;
    let dir = args.data_dir.clone().unwrap_or_else(|| temporary.path().join("search"));
    let index = SearchIndex::open(&dir).context("opening the index")?;
    ensure!(index.doc_count() == 0, "{} already holds an index", dir.display());

    eprintln!("generating {} products", args.products);
    let generate_started = Instant::now();
    let products: Vec<ProductDoc> =
        (0..args.products).map(|id| product(args.seed, id + 1)).collect();
    let generate = generate_started.elapsed();

    eprintln!("indexing into {}", dir.display());
    let index_started = Instant::now();
    for doc in &products {
        index.upsert(doc)?;
    }
    index.commit(args.products)?;
    let indexing = index_started.elapsed();
    let segments_after_commit = index.segment_count();
    eprintln!("  {:.1} s, {segments_after_commit} segments; merging", seconds(indexing));
    let merge_started = Instant::now();
    index.merge_segments()?;
    let merge = merge_started.elapsed();
    drop(products);
    ensure!(index.doc_count() == args.products, "every product is searchable");

    let mut rng = SplitMix64::new(args.seed ^ 0x5eed);
    let queries: Vec<SearchQuery> =
        (0..QUERY_POOL).map(|_| query(&mut rng, args.seed, args.products)).collect();
    eprintln!("querying at {}/s for {} s on {} threads", args.rate, args.seconds, args.threads);
    let (results, elapsed) = run_queries(&index, &queries, &args)?;
    let match_cache = index.match_cache_stats();
    let mut from_schedule = latency_histogram();
    let mut service = latency_histogram();
    let (mut done, mut hits, mut empty) = (0, 0, 0);
    for result in &results {
        from_schedule.add(&result.from_schedule)?;
        service.add(&result.service)?;
        done += result.queries;
        hits += result.hits;
        empty += result.empty;
    }

    let mut commit_latency = latency_histogram();
    let mut fresh_rng = SplitMix64::new(args.seed ^ 0xf2e5);
    for round in 0..args.freshness_rounds {
        for _ in 0..FRESHNESS_BATCH {
            let id = 1 + fresh_rng.below(args.products);
            let mut doc = product(args.seed, id);
            doc.stock_warehouses.clear();
            index.upsert(&doc)?;
        }
        let started = Instant::now();
        index.commit(args.products + round + 1)?;
        record_clamped(&mut commit_latency, nanos(started.elapsed()));
    }

    let report = serde_json::json!({
        "bench": "search",
        "measured": "upserts+commit per second into an on-disk index; query latency from the scheduled time at a fixed rate (and service time from start), after merging to one segment; commit = commit+reader reload after 50 upserts",
        "products": args.products,
        "seed": args.seed,
        "generate_s": seconds(generate),
        "index_s": seconds(indexing),
        "index_products_per_sec": per_second(args.products, indexing),
        "segments_after_commit": segments_after_commit,
        "merge_s": seconds(merge),
        "query_threads": args.threads,
        "offered_queries_per_sec": args.rate,
        "achieved_queries_per_sec": per_second(done, elapsed),
        "queries": done,
        "mean_total_hits": hits.checked_div(done).unwrap_or(0),
        "empty_results": empty,
        "latency_us_p50": micros(&from_schedule, 0.50),
        "latency_us_p99": micros(&from_schedule, 0.99),
        "latency_us_p999": micros(&from_schedule, 0.999),
        "latency_us_max": from_schedule.max() as f64 / 1000.0,
        "service_us_p50": micros(&service, 0.50),
        "service_us_p99": micros(&service, 0.99),
        "match_cache_hits": match_cache.hits,
        "match_cache_misses": match_cache.misses,
        "match_cache_evictions": match_cache.evictions,
        "match_cache_bytes": match_cache.bytes,
        "commit_ms_p50": micros(&commit_latency, 0.50) / 1000.0,
        "commit_ms_p99": micros(&commit_latency, 0.99) / 1000.0,
    });
    println!("{report}");
    Ok(())
}
