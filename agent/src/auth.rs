//! Trust between this agent and its collector: the enrollment secret, the agent's own token,
//! and what the agent does when the collector refuses either.
//!
//! The agent trades an enrollment secret (`enroll_secret`, or `census-agent enroll --secret`)
//! for a token bound to its agent id, kept in `token` in the state directory (mode 0600), and
//! sends that token as `Authorization: Bearer` with every batch.
//!
//! **Promises:**
//! - The secret and the token never reach a log, an error message or `{:?}` output: their types
//!   print `<redacted>` and have no `Display`.
//! - A refused token or secret never makes the agent loop: it enrolls at most once per send
//!   attempt ([`Auth::start_attempt`]), and a secret the collector refused is not offered again
//!   by this process.
//! - Each situation that stops delivery (no token, a refused token, a refused secret, a token
//!   for another agent) is logged once, as an ERROR an admin can act on, not once per cycle; it
//!   is logged again only when the situation changes. Reports keep being collected and queued
//!   meanwhile.
//! - Without a usable secret, the agent reads the `token` file before each send, so a token an
//!   admin writes with `census-agent enroll` while the service runs is picked up by the next
//!   cycle.
//! - A token enrolled for but not saved (the `token` file cannot be written) is kept in memory
//!   and sent as long as the collector accepts it and the file stays as it was
//!   ([`Auth::unsaved`]): each enrollment leaves a valid token on the collector, so one that
//!   failed to save must not make the agent enroll again every cycle.

use std::str::FromStr;

use serde::Deserialize;

/// The placeholder `print-config` writes in place of a secret.
pub const REDACTED: &str = "<redacted>";

/// An enrollment secret. No `Display`, and `Debug` prints `<redacted>`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Secret {
        Secret(secret.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

/// For clap: `--secret S`.
impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Secret, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

/// The agent's bearer token. No `Display`, and `Debug` prints `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

/// The longest token accepted; the collector's are far shorter.
pub const MAX_TOKEN_LEN: usize = 4096;

impl Token {
    /// A token as read from the `token` file or the collector's answer: surrounding whitespace
    /// is dropped; what is left must be visible ASCII without spaces (it goes into an HTTP
    /// header as is). The error never quotes the token.
    pub fn parse(text: &str) -> Result<Token, String> {
        let token = text.trim();
        if token.is_empty() {
            return Err("it is empty".to_owned());
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(format!(
                "it is {} bytes long, more than {MAX_TOKEN_LEN}",
                token.len()
            ));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("it holds characters other than visible ASCII".to_owned());
        }
        Ok(Token(token.to_owned()))
    }

    /// The token itself, for the `Authorization` header and the `token` file.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

/// A situation in which the agent does not deliver its reports until something changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// No usable `token` file and no enrollment secret. `detail` says why the file is not
    /// usable when there is one.
    NoToken { detail: Option<String> },
    /// The collector refused the token (unknown or revoked), and there is no secret to enroll
    /// again with, or enrolling again did not help.
    TokenRefused { reenrolled: bool },
    /// The collector refused the enrollment secret (wrong, revoked or expired).
    SecretRefused,
    /// The collector refused the reports: the token belongs to another agent id.
    Forbidden,
}

/// What to send with the next batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Send with this token.
    Send(Token),
    /// Enroll with the secret first.
    Enroll,
    /// Do not send.
    Stop(Problem),
}

/// The agent's credentials and what the collector made of them (see the module doc).
#[derive(Debug)]
pub struct Auth {
    secret: Option<Secret>,
    /// The collector refused this secret; it is not offered again by this process.
    secret_refused: bool,
    /// The last token the collector refused. A token file holding it is not sent again; a
    /// token file holding anything else is.
    refused: Option<Token>,
    /// This send attempt already enrolled.
    enrolled: bool,
    /// The situation logged last, until a batch is delivered or the token file changes.
    problem: Option<Problem>,
    /// What the token file held at the last [`Auth::next`].
    file: Result<Option<Token>, String>,
    /// A token enrolled for but not saved, and what the file held then. While the file still
    /// holds that, the agent acts as if the file held the token.
    unsaved: Option<(Token, Result<Option<Token>, String>)>,
}

impl Auth {
    pub fn new(secret: Option<Secret>) -> Auth {
        Auth {
            secret,
            secret_refused: false,
            refused: None,
            enrolled: false,
            problem: None,
            file: Ok(None),
            unsaved: None,
        }
    }

    /// A send attempt (one flush) begins: it may enroll once.
    pub fn start_attempt(&mut self) {
        self.enrolled = false;
    }

    /// Whether the agent may enroll now.
    pub fn can_enroll(&self) -> bool {
        self.secret.is_some() && !self.secret_refused && !self.enrolled
    }

    /// The secret to enroll with; marks this attempt as having enrolled.
    pub fn enrolling(&mut self) -> Option<Secret> {
        if !self.can_enroll() {
            return None;
        }
        self.enrolled = true;
        self.secret.clone()
    }

    /// Decides what to do given the token file's content (`Err` holds why it is unusable).
    /// Returns the situation that ended, if a token that is new to this process appeared
    /// while delivery was stopped, so the caller can say that it tries again.
    pub fn next(&mut self, stored: Result<Option<Token>, String>) -> (Next, Option<Problem>) {
        // A changed file (an admin enrolled, or the failed save went through after all) wins
        // over the token kept in memory.
        if self
            .unsaved
            .as_ref()
            .is_some_and(|(_, then)| *then != stored)
        {
            self.unsaved = None;
        }
        self.file = stored.clone();
        let stored = match &self.unsaved {
            Some((token, _)) => Ok(Some(token.clone())),
            None => stored,
        };
        let detail = match stored {
            Ok(Some(token)) if self.refused.as_ref() != Some(&token) => {
                // A token this process has not seen refused: an admin enrolled (or this is the
                // first send). If delivery was stopped, the situation changed: the next refusal
                // is news and is logged again.
                let ended = self.problem.take_if(|p| *p != Problem::Forbidden);
                return (Next::Send(token), ended);
            }
            Ok(_) => None,
            Err(detail) => Some(detail),
        };
        if self.can_enroll() {
            return (Next::Enroll, None);
        }
        let stored_is_refused = detail.is_none() && self.refused.is_some();
        let problem = if self.secret_refused {
            Problem::SecretRefused
        } else if stored_is_refused {
            Problem::TokenRefused {
                reenrolled: self.enrolled,
            }
        } else {
            Problem::NoToken { detail }
        };
        (Next::Stop(problem), None)
    }

    /// The token just enrolled for could not be saved: it stands in for the token file while
    /// the file holds what it held at the last [`Auth::next`].
    pub fn unsaved(&mut self, token: Token) {
        self.unsaved = Some((token, self.file.clone()));
    }

    /// The collector refused this token.
    pub fn token_refused(&mut self, token: Token) {
        self.refused = Some(token);
    }

    /// The collector refused the secret.
    pub fn secret_refused(&mut self) {
        self.secret_refused = true;
    }

    /// Records the situation; true when it is new and must be logged.
    pub fn enter(&mut self, problem: &Problem) -> bool {
        if self.problem.as_ref() == Some(problem) {
            return false;
        }
        self.problem = Some(problem.clone());
        true
    }

    /// A batch was delivered; returns the situation that ended, if any.
    pub fn delivered(&mut self) -> Option<Problem> {
        self.problem.take()
    }
}

impl Problem {
    /// What an admin reads in the log and in `once`'s error.
    pub fn message(&self, server: &str) -> String {
        let enroll = format!("`census-agent enroll --server {server} --secret SECRET`");
        match self {
            Problem::NoToken { detail: None } => format!(
                "no agent token: run {enroll} or set enroll_secret; reports are kept and sent \
                 once a token is there"
            ),
            Problem::NoToken {
                detail: Some(detail),
            } => format!(
                "no usable agent token ({detail}): run {enroll} or set enroll_secret; reports \
                 are kept and sent once a token is there"
            ),
            Problem::TokenRefused { reenrolled: false } => format!(
                "the collector refused this agent's token (unknown or revoked): run {enroll} \
                 or set enroll_secret; reports are kept and sent once the token changes"
            ),
            Problem::TokenRefused { reenrolled: true } => "the collector refused the token it \
                 had just issued to this agent; reports are kept and enrollment is tried again \
                 next cycle"
                .to_owned(),
            Problem::SecretRefused => format!(
                "the collector refused the enrollment secret: it is wrong, revoked or expired; \
                 get a new one with `census-collector enroll-secret create --name NAME` on the \
                 collector, then set enroll_secret or run {enroll}; reports are kept"
            ),
            Problem::Forbidden => format!(
                "the collector refused the reports: this agent's token belongs to another \
                 agent id (was the state directory's agent_id replaced?); run {enroll} to get \
                 a token for this agent id; reports are kept"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(t: &str) -> Token {
        Token::parse(t).unwrap()
    }

    #[test]
    fn secrets_and_tokens_never_show_in_debug_output() {
        let secret = Secret::new("hunter2-secret");
        let token = token("tok-abcdef");
        let text = format!("{secret:?} {token:?} {:?}", Some(&secret));
        assert!(
            !text.contains("hunter2") && !text.contains("abcdef"),
            "{text}"
        );
        assert!(text.contains(REDACTED));
    }

    #[test]
    fn tokens_are_trimmed_and_must_fit_a_header() {
        assert_eq!(token(" abc.DEF_123-~ \n").expose(), "abc.DEF_123-~");
        for bad in ["", "  \n", "two words", "tab\there", "é", "a\r\nX-Evil: 1"] {
            let err = Token::parse(bad).unwrap_err();
            assert!(!err.contains(bad.trim()) || bad.trim().is_empty(), "{err}");
        }
        assert!(Token::parse(&"a".repeat(MAX_TOKEN_LEN)).is_ok());
        assert!(Token::parse(&"a".repeat(MAX_TOKEN_LEN + 1)).is_err());
    }

    #[test]
    fn without_a_secret_a_missing_token_stops_delivery_and_is_logged_once() {
        let mut auth = Auth::new(None);
        auth.start_attempt();
        let (next, _) = auth.next(Ok(None));
        let Next::Stop(problem) = next else {
            panic!("{next:?}")
        };
        assert_eq!(problem, Problem::NoToken { detail: None });
        assert!(auth.enter(&problem));
        // The next cycles: the same situation, not logged again.
        for _ in 0..3 {
            auth.start_attempt();
            let (next, _) = auth.next(Ok(None));
            assert_eq!(next, Next::Stop(problem.clone()));
            assert!(!auth.enter(&problem));
        }
        // An admin enrolled: the token is sent, and the pause is over.
        let (next, ended) = auth.next(Ok(Some(token("t1"))));
        assert_eq!(next, Next::Send(token("t1")));
        assert_eq!(ended, Some(problem));
    }

    #[test]
    fn a_refused_token_is_not_sent_again_until_the_file_changes() {
        let mut auth = Auth::new(None);
        auth.start_attempt();
        assert_eq!(auth.next(Ok(Some(token("t1")))).0, Next::Send(token("t1")));
        auth.token_refused(token("t1"));
        let (next, _) = auth.next(Ok(Some(token("t1"))));
        let refused = Problem::TokenRefused { reenrolled: false };
        assert_eq!(next, Next::Stop(refused.clone()));
        assert!(auth.enter(&refused));
        auth.start_attempt();
        assert_eq!(
            auth.next(Ok(Some(token("t1")))).0,
            Next::Stop(refused.clone())
        );
        assert!(!auth.enter(&refused));
        // A new token: sent, and if it is refused too, that is logged again.
        let (next, ended) = auth.next(Ok(Some(token("t2"))));
        assert_eq!(next, Next::Send(token("t2")));
        assert_eq!(ended, Some(refused.clone()));
        auth.token_refused(token("t2"));
        assert!(auth.enter(&refused));
    }

    #[test]
    fn with_a_secret_the_agent_enrolls_at_most_once_per_attempt() {
        let mut auth = Auth::new(Some(Secret::new("s")));
        auth.start_attempt();
        assert_eq!(auth.next(Ok(None)).0, Next::Enroll);
        assert!(auth.enrolling().is_some());
        // The fresh token is refused at once: no second enrollment in this attempt.
        auth.token_refused(token("t1"));
        assert!(!auth.can_enroll());
        assert!(auth.enrolling().is_none());
        assert_eq!(
            auth.next(Ok(Some(token("t1")))).0,
            Next::Stop(Problem::TokenRefused { reenrolled: true })
        );
        // The next attempt may enroll again.
        auth.start_attempt();
        assert_eq!(auth.next(Ok(Some(token("t1")))).0, Next::Enroll);
    }

    #[test]
    fn a_refused_secret_is_not_offered_again_but_a_new_token_file_is_used() {
        let mut auth = Auth::new(Some(Secret::new("s")));
        auth.start_attempt();
        assert!(auth.enrolling().is_some());
        auth.secret_refused();
        auth.start_attempt();
        assert!(!auth.can_enroll());
        assert_eq!(auth.next(Ok(None)).0, Next::Stop(Problem::SecretRefused));
        assert_eq!(
            auth.next(Ok(Some(token("admin")))).0,
            Next::Send(token("admin"))
        );
    }

    #[test]
    fn a_token_that_could_not_be_saved_stands_in_for_the_file_until_it_changes() {
        let mut auth = Auth::new(Some(Secret::new("s")));
        let unwritable = || Err("token: is a directory".to_owned());
        auth.start_attempt();
        assert_eq!(auth.next(unwritable()).0, Next::Enroll);
        assert!(auth.enrolling().is_some());
        auth.unsaved(token("t1"));
        // The next attempts send it; none enrolls.
        for _ in 0..3 {
            auth.start_attempt();
            assert_eq!(auth.next(unwritable()).0, Next::Send(token("t1")));
        }
        // Refused: enrolled again, once in this attempt, as for a refused token file.
        auth.token_refused(token("t1"));
        assert_eq!(auth.next(unwritable()).0, Next::Enroll);
        assert!(auth.enrolling().is_some());
        auth.unsaved(token("t2"));
        assert_eq!(auth.next(unwritable()).0, Next::Send(token("t2")));
        auth.token_refused(token("t2"));
        assert_eq!(
            auth.next(unwritable()).0,
            Next::Stop(Problem::TokenRefused { reenrolled: true })
        );
        auth.start_attempt();
        assert_eq!(auth.next(unwritable()).0, Next::Enroll);
        assert!(auth.enrolling().is_some());
        auth.unsaved(token("t3"));
        auth.start_attempt();
        assert_eq!(auth.next(unwritable()).0, Next::Send(token("t3")));
        // An admin wrote a token: the file wins from now on.
        assert_eq!(
            auth.next(Ok(Some(token("admin")))).0,
            Next::Send(token("admin"))
        );
        auth.token_refused(token("admin"));
        assert_eq!(auth.next(Ok(Some(token("admin")))).0, Next::Enroll);
    }

    #[test]
    fn an_unusable_token_file_is_named_in_the_problem() {
        let mut auth = Auth::new(None);
        let (next, _) = auth.next(Err("it is empty".to_owned()));
        assert_eq!(
            next,
            Next::Stop(Problem::NoToken {
                detail: Some("it is empty".to_owned())
            })
        );
        // With a secret, an unusable file is replaced by enrolling.
        let mut auth = Auth::new(Some(Secret::new("s")));
        assert_eq!(auth.next(Err("it is empty".to_owned())).0, Next::Enroll);
    }

    #[test]
    fn messages_name_the_command_to_run_and_never_a_secret() {
        let text = Problem::NoToken { detail: None }.message("https://c.example");
        assert!(text.starts_with("no agent token"), "{text}");
        assert!(
            text.contains("census-agent enroll --server https://c.example --secret"),
            "{text}"
        );
        assert!(text.contains("enroll_secret"), "{text}");
        let text = Problem::SecretRefused.message("https://c.example");
        assert!(
            text.contains("census-collector enroll-secret create"),
            "{text}"
        );
        assert!(text.contains("revoked or expired"), "{text}");
    }
}
