//! The database a `sql` config points at, parsed from its secret `url` by hand.
//!
//! sqlx can parse connection URLs itself, but its parser also reads the worker's own
//! environment (`PGPASSWORD`, `PGHOST`, `~/.pgpass`…) and accepts query parameters that
//! name local files (`sslkey=/path`) or Unix sockets (`?host=/run/…`). A URL written by
//! an API user must not reach any of that, so only the parts we understand are taken:
//! scheme, host, port, user, password, database and the TLS mode.

use std::fmt;
use std::str::FromStr;

use sqlx::mysql::{MySqlConnectOptions, MySqlSslMode};
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use url::Url;

use super::super::FieldError;

const FIELD: &str = "config.url";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    /// MySQL and MariaDB (one wire protocol).
    MySql,
}

impl Dialect {
    fn scheme(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::MySql => "mysql",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Self::Postgres => 5432,
            Self::MySql => 3306,
        }
    }
}

#[derive(Clone, Copy)]
enum Tls {
    Pg(PgSslMode),
    My(MySqlSslMode),
}

/// Where and how to connect. The password never leaves this struct except into the
/// driver's connect options.
#[derive(Clone)]
pub struct Target {
    pub dialect: Dialect,
    /// The host as written (a name or an IP literal, without brackets).
    pub host: String,
    pub port: u16,
    user: String,
    password: Option<String>,
    database: String,
    tls: Tls,
}

/// Written by hand so that `{:?}` can never print the password.
impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.redacted())
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// Parses `raw`, pushing a field error (that never quotes the URL) if it is unusable.
    pub fn parse(raw: &str, errors: &mut Vec<FieldError>) -> Option<Self> {
        let mut fail = |msg: &str| {
            errors.push(FieldError::new(FIELD, msg));
            None
        };
        // `url`'s parse errors describe the problem, not the input.
        let url = match Url::parse(raw) {
            Ok(u) => u,
            Err(e) => return fail(&format!("not a URL ({e})")),
        };
        let dialect = match url.scheme() {
            "postgres" | "postgresql" => Dialect::Postgres,
            "mysql" | "mariadb" => Dialect::MySql,
            other => {
                return fail(&format!(
                    "scheme `{other}` is not postgres, postgresql, mysql or mariadb"
                ));
            }
        };
        let host = match url.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() && !d.contains('%') => d.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            // No host (or a percent-encoded socket path) would mean a local Unix socket.
            _ => return fail("must name a host (Unix sockets are not supported)"),
        };
        let Some(user) = percent_decode(url.username()).filter(|u| !u.is_empty()) else {
            return fail("must include a user name (scheme://user:password@host/db)");
        };
        let password = match url.password().map(percent_decode) {
            None => None,
            Some(Some(p)) => Some(p),
            Some(None) => return fail("the password must be valid percent-encoded UTF-8"),
        };
        let segments: Vec<&str> = url
            .path_segments()
            .map(Iterator::collect)
            .unwrap_or_default();
        let database = match segments.as_slice() {
            [db] if !db.is_empty() => match percent_decode(db) {
                Some(db) => db,
                None => return fail("the database name must be valid percent-encoded UTF-8"),
            },
            _ => return fail("must name one database in its path (scheme://host/db)"),
        };
        let mut tls = match dialect {
            Dialect::Postgres => Tls::Pg(PgSslMode::default()),
            Dialect::MySql => Tls::My(MySqlSslMode::default()),
        };
        for (key, value) in url.query_pairs() {
            tls = match (&*key, dialect) {
                ("sslmode", Dialect::Postgres) => match PgSslMode::from_str(&value) {
                    Ok(m) => Tls::Pg(m),
                    Err(_) => {
                        return fail(
                            "sslmode must be disable, allow, prefer, require, verify-ca or verify-full",
                        );
                    }
                },
                ("sslmode" | "ssl-mode", Dialect::MySql) => {
                    match MySqlSslMode::from_str(&value.replace('-', "_")) {
                        Ok(m) => Tls::My(m),
                        Err(_) => {
                            return fail(
                                "ssl-mode must be disabled, preferred, required, verify_ca or verify_identity",
                            );
                        }
                    }
                }
                _ => {
                    return fail(&format!(
                        "parameter `{key}` is not supported (only the TLS mode: sslmode / ssl-mode)"
                    ));
                }
            };
        }
        Some(Self {
            dialect,
            port: url.port().unwrap_or(dialect.default_port()),
            host,
            user,
            password,
            database,
            tls,
        })
    }

    /// `scheme://host:port/db`: what messages, logs and the SSRF check see.
    pub fn redacted(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!(
            "{}://{host}:{}/{}",
            self.dialect.scheme(),
            self.port,
            self.database
        )
    }

    /// The redacted form as a URL (for `Connector::urls`).
    pub fn url(&self) -> Option<Url> {
        let mut u = Url::parse(&format!("{}://placeholder/", self.dialect.scheme())).ok()?;
        if self.host.contains(':') {
            u.set_host(Some(&format!("[{}]", self.host))).ok()?;
        } else {
            u.set_host(Some(&self.host)).ok()?;
        }
        u.set_port(Some(self.port)).ok()?;
        u.path_segments_mut().ok()?.clear().push(&self.database);
        Some(u)
    }

    /// Removes the password from a driver or server message, should one ever echo it.
    pub fn scrub(&self, message: &str) -> String {
        match &self.password {
            Some(p) => crate::secrets::redact(message, p),
            None => message.to_owned(),
        }
    }

    /// Options for connecting to `ip` (an address the network policy already accepted),
    /// so that the name is not resolved a second time.
    pub fn pg_options(&self, ip: &str, app: &str) -> PgConnectOptions {
        // `new_without_pgpass` still reads `PG*` variables: every field they could set
        // that matters (host, port, user, password, database) is overwritten here.
        let mut o = PgConnectOptions::new_without_pgpass()
            .host(ip)
            .port(self.port)
            .username(&self.user)
            // An empty password, not the worker's `PGPASSWORD`, when the URL has none.
            .password(self.password.as_deref().unwrap_or(""))
            .database(&self.database)
            .application_name(app)
            .statement_cache_capacity(0);
        if let Tls::Pg(m) = self.tls {
            o = o.ssl_mode(m);
        }
        o
    }

    pub fn mysql_options(&self, ip: &str) -> MySqlConnectOptions {
        let mut o = MySqlConnectOptions::new()
            .host(ip)
            .port(self.port)
            .username(&self.user)
            .database(&self.database)
            // Keep the server's SQL mode: `||` must mean what the user's query means.
            .pipes_as_concat(false)
            .statement_cache_capacity(0);
        if let Some(p) = &self.password {
            o = o.password(p);
        }
        if let Tls::My(m) = self.tls {
            o = o.ssl_mode(m);
        }
        o
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(raw: &str) -> Result<Target, Vec<FieldError>> {
        let mut errors = Vec::new();
        Target::parse(raw, &mut errors).ok_or(errors)
    }

    #[test]
    fn parses_and_redacts() {
        let t = parse("postgresql://u:p%40ss@db.example.com/sales?sslmode=require").unwrap();
        assert_eq!(t.dialect, Dialect::Postgres);
        assert_eq!(t.password.as_deref(), Some("p@ss"));
        assert_eq!(t.redacted(), "postgres://db.example.com:5432/sales");
        assert_eq!(
            t.url().unwrap().as_str(),
            "postgres://db.example.com:5432/sales"
        );
        let m = parse("mariadb://root@[::1]:3307/x").unwrap();
        assert_eq!(m.dialect, Dialect::MySql);
        assert_eq!(m.redacted(), "mysql://[::1]:3307/x");
        assert!(!format!("{t:?}").contains("p@ss"));
    }

    #[test]
    fn refuses_what_it_does_not_understand_without_quoting_the_url() {
        for bad in [
            "http://u:hunter22@h/db",
            "postgres://u:hunter22@/db",
            "postgres://u:hunter22@h/",
            "postgres://u:hunter22@h/a/b",
            "postgres://:hunter22@h/db",
            "postgres://u:hunter22@h/db?host=/tmp",
            "postgres://u:hunter22@h/db?sslkey=/etc/key",
            "postgres://u:hunter22@h/db?sslmode=sometimes",
            "mysql://u:hunter22@h/db?socket=/tmp/s",
            "postgres://u:hunter22@%2Ftmp/db",
            "not a url hunter22",
        ] {
            let errs = parse(bad).err().unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(
                errs.iter().all(|e| !e.message.contains("hunter22")),
                "{errs:?}"
            );
        }
    }
}
