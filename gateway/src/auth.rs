//! Who is calling: password hashes, signed bearer tokens, the admin token, roles, rate limits.
//!
//! A token is `<payload>.<signature>`, both base64url without padding: the payload is the JSON
//! `{"u": user_id, "r": role, "e": expires_at_unix}` and the signature its HMAC-SHA256 under a key
//! kept in the data directory (`token.key`, mode 0600), so tokens stay valid across restarts and
//! nothing about sessions is stored. The admin token is a separate secret compared in constant time.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::ApiError;
use crate::Services;

/// What a caller may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Buyer,
    Seller,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Buyer => "buyer",
            Role::Seller => "seller",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "buyer" => Some(Role::Buyer),
            "seller" => Some(Role::Seller),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// The user id of the configured admin token (no row in `users`).
pub const ADMIN_USER_ID: i64 = 0;

/// An authenticated caller, extracted from `Authorization: Bearer <token>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    pub user_id: i64,
    pub role: Role,
}

impl Caller {
    pub fn require(self, role: Role) -> Result<Caller, ApiError> {
        if self.role == role {
            Ok(self)
        } else {
            Err(ApiError::forbidden(format!("this action needs the {} role", role.as_str())))
        }
    }

    pub fn is_admin(self) -> bool {
        self.role == Role::Admin
    }
}

/// Signs and checks bearer tokens.
pub struct Tokens {
    key: [u8; 32],
    admin_token: String,
    lifetime: Duration,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").field("lifetime", &self.lifetime).finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct Claims {
    u: i64,
    r: Role,
    e: u64,
}

/// The fewest characters an admin token may have. The admin token is a bearer secret compared as
/// it is, with no rate limit in front of it, so it must not be guessable; a generated one has 48
/// (24 random bytes in hex).
pub const ADMIN_TOKEN_CHARS_MIN: usize = 16;

impl Tokens {
    /// Loads the signing key and the admin token from `data_dir`, creating them on first start.
    /// `admin_token` from the environment wins over the stored one. A newly generated admin token
    /// is printed once on standard error. An admin token shorter than [`ADMIN_TOKEN_CHARS_MIN`]
    /// characters, given or stored, refuses the start; a given one is checked before any file is
    /// created.
    pub fn load(
        data_dir: &Path,
        admin_token: Option<String>,
        lifetime: Duration,
    ) -> anyhow::Result<Tokens> {
        let path = data_dir.join("admin.token");
        let given = admin_token.filter(|token| !token.is_empty());
        if let Some(token) = &given {
            check_admin_token(token).map_err(|chars| {
                anyhow::anyhow!(
                    "SURGE_ADMIN_TOKEN is {chars} characters long, and an admin token needs at \
                     least {ADMIN_TOKEN_CHARS_MIN}: set a longer one (for example the output of \
                     `openssl rand -hex 24`), or unset it to have one generated into {}",
                    path.display()
                )
            })?;
        }
        let key_bytes = read_or_create_secret(&data_dir.join("token.key"), 32)?;
        let mut key = [0u8; 32];
        key.copy_from_slice(&key_bytes[..32]);
        let admin_token = match given {
            Some(token) => token,
            None => match std::fs::read_to_string(&path) {
                Ok(token) => {
                    let token = token.trim().to_owned();
                    check_admin_token(&token).map_err(|chars| {
                        anyhow::anyhow!(
                            "the admin token in {} is {chars} characters long, and an admin \
                             token needs at least {ADMIN_TOKEN_CHARS_MIN}: write a longer one \
                             into the file, or remove the file to have a new one generated (and \
                             printed once)",
                            path.display()
                        )
                    })?;
                    token
                }
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    let mut random = [0u8; 24];
                    getrandom::fill(&mut random)
                        .map_err(|error| anyhow::anyhow!("random bytes: {error}"))?;
                    let token = hex(&random);
                    write_private(&path, token.as_bytes())?;
                    eprintln!("surge: admin token (saved in {}): {token}", path.display());
                    token
                }
                Err(error) => {
                    return Err(anyhow::anyhow!("read the admin token {}: {error}", path.display()))
                }
            },
        };
        Ok(Tokens { key, admin_token, lifetime })
    }

    /// A signed token for `user_id` and its expiry (Unix seconds).
    pub fn issue(&self, user_id: i64, role: Role) -> (String, u64) {
        let expires_at = unix_now() + self.lifetime.as_secs();
        let claims = serde_json::to_vec(&Claims { u: user_id, r: role, e: expires_at })
            .expect("claims serialize");
        let payload = URL_SAFE_NO_PAD.encode(claims);
        let signature = URL_SAFE_NO_PAD.encode(self.sign(payload.as_bytes()));
        (format!("{payload}.{signature}"), expires_at)
    }

    /// The caller a bearer token stands for.
    pub fn verify(&self, token: &str) -> Result<Caller, ApiError> {
        if constant_time_eq(token.as_bytes(), self.admin_token.as_bytes()) {
            return Ok(Caller { user_id: ADMIN_USER_ID, role: Role::Admin });
        }
        let invalid = || ApiError::unauthorized("invalid token");
        let (payload, signature) = token.split_once('.').ok_or_else(invalid)?;
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| invalid())?;
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        mac.verify_slice(&signature).map_err(|_| invalid())?;
        let claims: Claims = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(invalid)?;
        if claims.e <= unix_now() {
            return Err(ApiError::unauthorized("token expired"));
        }
        Ok(Caller { user_id: claims.u, role: claims.r })
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length")
    }

    fn sign(&self, bytes: &[u8]) -> Vec<u8> {
        let mut mac = self.mac();
        mac.update(bytes);
        mac.finalize().into_bytes().to_vec()
    }
}

/// An argon2id hash (PHC string) of a password, with a random salt.
pub fn hash_password(password: &str) -> Result<String, ApiError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(ApiError::internal)?;
    let salt = SaltString::encode_b64(&salt).map_err(ApiError::internal)?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(ApiError::internal)
}

pub fn verify_password(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .is_ok_and(|hash| Argon2::default().verify_password(password.as_bytes(), &hash).is_ok())
}

/// Token buckets per key (a user id by default; a client address or an email for the sign-in
/// routes): `burst` requests at once, refilled at `per_second`. A rate of 0 disables the limit.
#[derive(Debug)]
pub struct RateLimiter<K = i64> {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, (f64, Instant)>>,
}

/// Keys a limiter holds before it forgets those idle for a minute (memory stays bounded).
const LIMITER_KEYS_MAX: usize = 1_000_000;

impl<K: std::hash::Hash + Eq> RateLimiter<K> {
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self::with_rate(f64::from(per_second), burst)
    }

    /// `per_minute` requests a minute, `burst` at once.
    pub fn per_minute(per_minute: u32, burst: u32) -> Self {
        Self::with_rate(f64::from(per_minute) / 60.0, burst)
    }

    fn with_rate(per_second: f64, burst: u32) -> Self {
        Self { per_second, burst: f64::from(burst.max(1)), buckets: Mutex::default() }
    }

    /// Takes one request from the key's bucket, or says how many seconds until one is there.
    pub fn check(&self, key: K) -> Result<(), u64> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() > LIMITER_KEYS_MAX {
            // Forget idle keys rather than grow without bound.
            buckets.retain(|_, (_, at)| now.duration_since(*at) < Duration::from_secs(60));
        }
        let (tokens, at) = buckets.entry(key).or_insert((self.burst, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.per_second).ceil().max(1.0) as u64)
        }
    }
}

/// Password hashing and checking, bounded: each argon2id run takes about 19 MiB and tens of
/// milliseconds of a core on purpose, so an unbounded number of them at once (a flood of sign-ins)
/// takes the server's memory and CPU. At most `running_max` run at once on the blocking pool, at
/// most `waiting_max` more wait for a turn, and past that a request answers `503 overloaded`.
/// Unknown emails are checked against a dummy hash, so the time of an answer does not tell
/// whether an email is registered.
#[derive(Debug)]
pub struct Passwords {
    bound: Bound,
    dummy: std::sync::OnceLock<String>,
}

/// Blocking work with a bound: at most `running_max` at once on the blocking pool, at most
/// `waiting_max` more waiting for a turn, and past that `503 overloaded` at once (password
/// hashing, searches).
#[derive(Debug)]
pub struct Bound {
    running: tokio::sync::Semaphore,
    waiting: std::sync::atomic::AtomicUsize,
    waiting_max: usize,
    /// The `detail` of the `503`.
    busy: &'static str,
}

impl Bound {
    pub fn new(running_max: usize, waiting_max: usize, busy: &'static str) -> Bound {
        Bound {
            running: tokio::sync::Semaphore::new(running_max.max(1)),
            waiting: std::sync::atomic::AtomicUsize::new(0),
            waiting_max,
            busy,
        }
    }

    /// Runs `work` on the blocking pool when a turn is free.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let permit = match self.running.try_acquire() {
            Ok(permit) => permit,
            Err(_) => {
                let waiting = Waiting::join(&self.waiting, self.waiting_max).ok_or_else(|| {
                    let mut error = ApiError::overloaded();
                    error.detail = self.busy.to_owned();
                    error
                })?;
                let permit = self.running.acquire().await.map_err(ApiError::internal)?;
                drop(waiting);
                permit
            }
        };
        let result = tokio::task::spawn_blocking(work).await.map_err(ApiError::internal);
        drop(permit);
        result
    }
}

impl Passwords {
    pub fn new(running_max: usize, waiting_max: usize) -> Passwords {
        Passwords {
            bound: Bound::new(running_max, waiting_max, "too many sign-ins at once; retry shortly"),
            dummy: std::sync::OnceLock::new(),
        }
    }

    /// One hashing slot per core, and a queue of 16 per core.
    pub fn for_this_machine() -> Passwords {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Passwords::new(cores, 16 * cores)
    }

    /// A new hash of `password`.
    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        self.bound.run(move || hash_password(&password)).await?
    }

    /// Whether `password` matches `stored`; with no stored hash (an unknown email, a user without
    /// a password), the same work is done against a dummy and the answer is `false`.
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<bool, ApiError> {
        let (hash, known) = match stored {
            Some(stored) => (stored, true),
            None => (self.dummy().await?, false),
        };
        // Checked in both cases, so an unknown email takes as long as a wrong password.
        let matches = self.bound.run(move || verify_password(&password, &hash)).await?;
        Ok(known && matches)
    }

    async fn dummy(&self) -> Result<String, ApiError> {
        if let Some(dummy) = self.dummy.get() {
            return Ok(dummy.clone());
        }
        let hash = self.bound.run(|| hash_password("not anyone's password")).await??;
        Ok(self.dummy.get_or_init(|| hash).clone())
    }
}

/// The client's IP address, when the request came through [`crate::server::serve`] (tests that
/// drive the router without a socket have none, and are not limited per address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddress(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>();
        Ok(ClientAddress(peer.map(|info| info.0.ip())))
    }
}

/// The per-address limit of the sign-up and sign-in routes.
pub fn limit_address(services: &Services, address: ClientAddress) -> Result<(), ApiError> {
    match address.0 {
        Some(ip) => services.sign_in_by_address.check(ip).map_err(ApiError::rate_limited),
        None => Ok(()),
    }
}

/// The per-address limit of the public catalog reads (search, suggest, categories).
pub fn limit_reads(services: &Services, address: ClientAddress) -> Result<(), ApiError> {
    match address.0 {
        Some(ip) => services.reads_by_address.check(ip).map_err(ApiError::rate_limited),
        None => Ok(()),
    }
}

/// A place in the queue of [`Passwords`], given up when dropped (also when the request that holds
/// it is dropped while it waits).
struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Waiting<'a> {
    fn join(count: &'a std::sync::atomic::AtomicUsize, max: usize) -> Option<Waiting<'a>> {
        use std::sync::atomic::Ordering;
        let joined = count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .is_ok();
        joined.then(|| Waiting(count))
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl FromRequestParts<std::sync::Arc<crate::AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &std::sync::Arc<crate::AppState>,
    ) -> Result<Self, Self::Rejection> {
        let services: &Services = state.services()?;
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <token>"))?;
        // The scheme is case-insensitive (RFC 9110, 11.1): `bearer` and `BEARER` are `Bearer`.
        let token = header
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token)
            .ok_or_else(|| ApiError::unauthorized("Authorization must be `Bearer <token>`"))?;
        let caller = services.tokens.verify(token.trim())?;
        if !caller.is_admin() {
            services.rate_limiter.check(caller.user_id).map_err(ApiError::rate_limited)?;
        }
        Ok(caller)
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A hex secret kept in `path` (mode 0600), created on first use.
pub fn load_or_create_hex_secret(path: &Path) -> anyhow::Result<String> {
    Ok(hex(&read_or_create_secret(path, 32)?[..32]))
}

/// Whether `token` is long enough to be an admin token; `Err` with its length in characters.
fn check_admin_token(token: &str) -> Result<(), usize> {
    let chars = token.chars().count();
    if chars < ADMIN_TOKEN_CHARS_MIN {
        Err(chars)
    } else {
        Ok(())
    }
}

/// Reads a secret file, or creates it with `len` random bytes and mode 0600.
fn read_or_create_secret(path: &Path, len: usize) -> anyhow::Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(bytes) => {
            anyhow::ensure!(bytes.len() >= len, "{} is shorter than {len} bytes", path.display());
            Ok(bytes)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = vec![0u8; len];
            getrandom::fill(&mut bytes)
                .map_err(|error| anyhow::anyhow!("random bytes: {error}"))?;
            write_private(path, &bytes)?;
            Ok(bytes)
        }
        Err(error) => Err(anyhow::anyhow!("read {}: {error}", path.display())),
    }
}

/// Writes a new secret file (mode 0600) so that, whenever the machine stops, `path` either does
/// not exist or holds all of `bytes`: the bytes go into `<name>.tmp` in the same directory, which
/// is synced and renamed to `path`, and then the directory is synced so the name survives a power
/// loss. (Written in place, a crash could leave an empty or partial file, which the next start
/// would read as the secret.) A `.tmp` left by a crash is replaced.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let name =
        path.file_name().ok_or_else(|| anyhow::anyhow!("{} names no file", path.display()))?;
    let mut temporary_name = name.to_owned();
    temporary_name.push(".tmp");
    let temporary = path.with_file_name(temporary_name);
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    match std::fs::remove_file(&temporary) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(anyhow::anyhow!("remove {}: {error}", temporary.display())),
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&temporary).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    written.map_err(|error| anyhow::anyhow!("write {}: {error}", temporary.display()))?;
    std::fs::rename(&temporary, path).map_err(|error| {
        anyhow::anyhow!("rename {} to {}: {error}", temporary.display(), path.display())
    })?;
    std::fs::File::open(directory)
        .and_then(|directory| directory.sync_all())
        .map_err(|error| anyhow::anyhow!("sync the directory {}: {error}", directory.display()))?;
    Ok(())
}

#[cfg(test)]
mod password_tests {
    use super::*;

    #[tokio::test]
    async fn hashing_past_the_running_and_waiting_bounds_answers_overloaded() {
        let passwords = Passwords::new(1, 1);
        let one = || passwords.hash("a password".to_owned());
        // All three are first polled together: the first runs, the second waits, the third is
        // refused at once.
        let (first, second, third) = tokio::join!(one(), one(), one());
        assert!(first.is_ok() && second.is_ok(), "{first:?} {second:?}");
        let refused = third.unwrap_err();
        assert_eq!((refused.status.as_u16(), refused.code), (503, "overloaded"));
        // The queue is free again afterwards.
        assert_eq!(passwords.bound.waiting.load(std::sync::atomic::Ordering::Acquire), 0);
        assert!(passwords.hash("again".to_owned()).await.is_ok());
    }

    #[tokio::test]
    async fn a_request_that_gives_up_while_waiting_leaves_the_queue() {
        let passwords = Passwords::new(1, 1);
        let mut running = Box::pin(passwords.hash("first".to_owned()));
        let mut waiting = Box::pin(passwords.hash("second".to_owned()));
        // Poll both once: the first holds the slot, the second joined the queue.
        let _ = futures_poll_once(running.as_mut()).await;
        let _ = futures_poll_once(waiting.as_mut()).await;
        assert_eq!(passwords.bound.waiting.load(std::sync::atomic::Ordering::Acquire), 1);
        // Dropping the waiting request gives its place back.
        drop(waiting);
        assert_eq!(passwords.bound.waiting.load(std::sync::atomic::Ordering::Acquire), 0);
        assert!(running.await.is_ok());
    }

    /// Polls a future once; whether it finished.
    async fn futures_poll_once<F: std::future::Future>(future: std::pin::Pin<&mut F>) -> bool {
        let mut future = Some(future);
        std::future::poll_fn(move |context| {
            let polled = future.take().expect("polled once").poll(context);
            std::task::Poll::Ready(polled.is_ready())
        })
        .await
    }

    #[tokio::test]
    async fn an_unknown_email_is_checked_against_a_dummy_hash() {
        let passwords = Passwords::new(2, 2);
        assert!(passwords.dummy.get().is_none());
        assert!(!passwords.verify("guess".to_owned(), None).await.unwrap());
        // The dummy is a real argon2id hash, so the unknown email paid a real verification.
        let dummy = passwords.dummy.get().expect("made on first use").clone();
        assert!(PasswordHash::new(&dummy).is_ok_and(|hash| hash.algorithm.as_str() == "argon2id"));
        let stored = hash_password("right").unwrap();
        assert!(passwords.verify("right".to_owned(), Some(stored.clone())).await.unwrap());
        assert!(!passwords.verify("wrong".to_owned(), Some(stored)).await.unwrap());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn error_of(result: anyhow::Result<Tokens>) -> String {
        format!("{:#}", result.expect_err("the start is refused"))
    }

    #[test]
    fn a_given_admin_token_shorter_than_sixteen_characters_is_refused_before_any_file() {
        let dir = tempfile::tempdir().unwrap();
        let error = error_of(Tokens::load(dir.path(), Some("fifteen-chars!!".to_owned()), HOUR));
        assert!(error.contains("SURGE_ADMIN_TOKEN is 15 characters"), "{error}");
        assert!(error.contains("at least 16"), "{error}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing was written");
        // Characters, not bytes: fifteen letters of two bytes each are still fifteen.
        let error = error_of(Tokens::load(dir.path(), Some("é".repeat(15)), HOUR));
        assert!(error.contains("is 15 characters"), "{error}");

        let tokens = Tokens::load(dir.path(), Some("sixteen-chars!!!".to_owned()), HOUR).unwrap();
        assert_eq!(tokens.verify("sixteen-chars!!!").unwrap().role, Role::Admin);
        assert!(!dir.path().join("admin.token").exists(), "a given token is not stored");
    }

    #[test]
    fn a_stored_admin_token_shorter_than_sixteen_characters_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        // What a crash could leave of a token file written in place: nothing, or a part.
        for stored in ["", "0123456789abcde\n"] {
            std::fs::write(dir.path().join("admin.token"), stored).unwrap();
            let error = error_of(Tokens::load(dir.path(), None, HOUR));
            assert!(error.contains("admin.token"), "{error}");
            assert!(error.contains("remove the file"), "{error}");
            assert_eq!(std::fs::read_to_string(dir.path().join("admin.token")).unwrap(), stored);
        }
        std::fs::write(dir.path().join("admin.token"), "0123456789abcdef\n").unwrap();
        let tokens = Tokens::load(dir.path(), None, HOUR).unwrap();
        assert_eq!(tokens.verify("0123456789abcdef").unwrap().role, Role::Admin);
    }

    #[test]
    fn a_generated_admin_token_is_written_whole_through_a_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // A crash of an earlier first start left a temporary file behind.
        std::fs::write(dir.path().join("admin.token.tmp"), "partial").unwrap();
        let tokens = Tokens::load(dir.path(), None, HOUR).unwrap();
        let stored = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
        assert_eq!(stored.len(), 48, "{stored}");
        assert_eq!(tokens.verify(&stored).unwrap().role, Role::Admin);
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["admin.token", "token.key"], "no temporary file is left");
        #[cfg(unix)]
        for name in &names {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join(name)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        // The next start reads the same secrets back.
        let again = Tokens::load(dir.path(), None, HOUR).unwrap();
        assert_eq!(again.verify(&stored).unwrap().role, Role::Admin);
        let (token, _) = tokens.issue(7, Role::Buyer);
        assert_eq!(again.verify(&token).unwrap(), Caller { user_id: 7, role: Role::Buyer });
    }
}
