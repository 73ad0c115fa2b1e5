//! Bearer-token checks for publishing, playing and the session/track API. Tokens are compared in
//! constant time so their bytes cannot be recovered by timing the 401s.

use subtle::ConstantTimeEq;

use crate::config::{Config, TokenRule};

/// What a request wants to do to a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// WHIP: publish the stream.
    Publish,
    /// WHEP: play the stream.
    Play,
}

/// Outcome of a check, so the HTTP layer can tell 401 (who are you) from 403 (not this stream).
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The request may go ahead.
    Allowed,
    /// 401: no bearer token, or an unknown one.
    Unauthenticated,
    /// 403: the token is known but may not do this on this stream.
    Forbidden,
}

/// Token rules plus the anonymous policy, built once from the config.
#[derive(Debug, Clone)]
pub struct Auth {
    rules: Vec<TokenRule>,
    apps: Vec<(String, String)>,
    anonymous_publish: bool,
    anonymous_play: bool,
}

/// Which streams a request may see on `/v1/streams`.
#[derive(Debug, PartialEq, Eq)]
pub enum Listing {
    /// Every stream (an admin token, or anyone may play).
    All,
    /// Those its token may play.
    Playable,
    /// No token, or one the node does not know.
    Refused,
}

impl Auth {
    /// The token rules, apps and anonymous policy of `config`.
    pub fn new(config: &Config) -> Self {
        Auth {
            rules: config.tokens.clone(),
            apps: config
                .apps
                .iter()
                .map(|a| (a.id.clone(), a.secret.clone()))
                .collect(),
            anonymous_publish: config.anonymous_publish(),
            anonymous_play: config.anonymous_play(),
        }
    }

    /// Whether `action` needs no token on this node.
    pub fn anonymous(&self, action: Action) -> bool {
        match action {
            Action::Publish => self.anonymous_publish,
            Action::Play => self.anonymous_play,
        }
    }

    /// May the holder of `token` (from `Authorization: Bearer`) do `action` on `stream`?
    pub fn check(&self, token: Option<&str>, action: Action, stream: &str) -> Verdict {
        if self.anonymous(action) {
            return Verdict::Allowed;
        }
        self.judge(token, |rule| {
            let patterns = match action {
                Action::Publish => &rule.publish,
                Action::Play => &rule.play,
            };
            patterns.iter().any(|p| pattern_matches(p, stream))
        })
    }

    /// The verdict on `token` given what each rule grants. Every rule is compared, matched or
    /// not, so timing does not reveal which one matched.
    fn judge(&self, token: Option<&str>, grants: impl Fn(&TokenRule) -> bool) -> Verdict {
        let Some(token) = token else {
            return Verdict::Unauthenticated;
        };
        let mut known = false;
        let mut allowed = false;
        for rule in &self.rules {
            let equal: bool = rule.token.as_bytes().ct_eq(token.as_bytes()).into();
            known |= equal;
            allowed |= equal && grants(rule);
        }
        match (known, allowed) {
            (_, true) => Verdict::Allowed,
            (true, false) => Verdict::Forbidden,
            (false, false) => Verdict::Unauthenticated,
        }
    }

    /// No token and no app configured: a laptop or a closed network, where monitoring is open.
    pub fn is_open(&self) -> bool {
        self.rules.is_empty() && self.apps.is_empty()
    }

    /// May the holder of `token` read the node's monitoring JSON (`/v1/stats`)? Open nodes
    /// answer anyone; otherwise only an admin token.
    pub fn check_admin(&self, token: Option<&str>) -> Verdict {
        if self.is_open() {
            return Verdict::Allowed;
        }
        self.judge(token, |rule| rule.admin)
    }

    /// What `/v1/streams` shows the holder of `token`: everything to an admin or where anyone
    /// may play, else the streams the token may play; an unknown token sees nothing.
    pub fn listing(&self, token: Option<&str>) -> Listing {
        if self.anonymous_play || self.check_admin(token) == Verdict::Allowed {
            return Listing::All;
        }
        match self.check(token, Action::Play, "") {
            Verdict::Unauthenticated => Listing::Refused,
            _ => Listing::Playable,
        }
    }

    /// Is `secret` the secret of app `id`?
    pub fn check_app(&self, id: &str, secret: Option<&str>) -> Verdict {
        let Some(secret) = secret else {
            return Verdict::Unauthenticated;
        };
        let mut ok = false;
        for (app, app_secret) in &self.apps {
            let equal: bool = app_secret.as_bytes().ct_eq(secret.as_bytes()).into();
            ok |= equal && app == id;
        }
        if ok {
            Verdict::Allowed
        } else {
            Verdict::Unauthenticated
        }
    }
}

fn pattern_matches(pattern: &str, stream: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => stream.starts_with(prefix),
        None => pattern == stream,
    }
}

/// The token of an `Authorization: Bearer <token>` header value, if that is what it is.
pub fn bearer(value: Option<&str>) -> Option<&str> {
    let value = value?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Cli, Config};

    fn auth(cli: Cli) -> Auth {
        Auth::new(&Config::load(cli).expect("config"))
    }

    #[test]
    fn tokens_are_scoped_to_actions() {
        let a = auth(Cli {
            publish_tokens: vec!["pub-secret-1".into()],
            play_tokens: vec!["play-secret-1".into()],
            ..Cli::default()
        });
        assert_eq!(
            a.check(Some("pub-secret-1"), Action::Publish, "s"),
            Verdict::Allowed
        );
        assert_eq!(
            a.check(Some("play-secret-1"), Action::Publish, "s"),
            Verdict::Forbidden
        );
        assert_eq!(
            a.check(Some("nope-nope-nope"), Action::Publish, "s"),
            Verdict::Unauthenticated
        );
        assert_eq!(a.check(None, Action::Play, "s"), Verdict::Unauthenticated);
        assert_eq!(
            a.check(Some("play-secret-1"), Action::Play, "s"),
            Verdict::Allowed
        );
    }

    #[test]
    fn monitoring_needs_an_admin_token_once_any_token_exists() {
        let open = auth(Cli::default());
        assert_eq!(open.check_admin(None), Verdict::Allowed);
        assert_eq!(open.listing(None), Listing::All);

        let a = auth(Cli {
            publish_tokens: vec!["pub-secret-1".into()],
            play_tokens: vec!["play-secret-1".into()],
            admin_tokens: vec!["admin-secret-1".into()],
            ..Cli::default()
        });
        assert_eq!(a.check_admin(None), Verdict::Unauthenticated);
        assert_eq!(a.check_admin(Some("nope-nope")), Verdict::Unauthenticated);
        assert_eq!(a.check_admin(Some("pub-secret-1")), Verdict::Forbidden);
        assert_eq!(a.check_admin(Some("admin-secret-1")), Verdict::Allowed);
        assert_eq!(a.listing(None), Listing::Refused);
        assert_eq!(a.listing(Some("nope-nope")), Listing::Refused);
        assert_eq!(a.listing(Some("play-secret-1")), Listing::Playable);
        assert_eq!(a.listing(Some("admin-secret-1")), Listing::All);
        // An admin token publishes and plays nothing.
        assert_eq!(
            a.check(Some("admin-secret-1"), Action::Publish, "s"),
            Verdict::Forbidden
        );

        // Only publish tokens: anyone may play, so anyone may list; stats stay closed.
        let p = auth(Cli {
            publish_tokens: vec!["pub-secret-1".into()],
            ..Cli::default()
        });
        assert_eq!(p.listing(None), Listing::All);
        assert_eq!(p.check_admin(None), Verdict::Unauthenticated);
    }

    #[test]
    fn patterns() {
        assert!(pattern_matches("*", "x"));
        assert!(pattern_matches("studio-*", "studio-a"));
        assert!(!pattern_matches("studio-*", "other"));
        assert!(pattern_matches("exact", "exact"));
        assert!(!pattern_matches("exact", "exact2"));
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(None), None);
    }
}
