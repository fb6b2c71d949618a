//! How the mock decides what to answer: [`Rule`].

use std::fmt;
use std::sync::Arc;

use super::{RecordedRequest, Reply};

type Predicate = Arc<dyn Fn(&RecordedRequest) -> bool + Send + Sync>;
type Responder = Arc<dyn Fn(&RecordedRequest) -> Reply + Send + Sync>;

/// A scripted behaviour of the mock model: which turns it answers and with what.
///
/// Rules are checked in the order they were added with [`MockAnthropic::on`]; the first
/// whose matcher accepts a turn's first request answers the whole turn.
///
/// [`MockAnthropic::on`]: crate::MockAnthropic::on
///
/// - **Matching.** Matchers look at the request: [`RecordedRequest::prompt`] (the latest
///   user text), the system prompt, the model, or anything via [`Rule::matching`].
/// - **Steps.** A turn is a prompt followed by model requests until the model stops
///   calling tools; [`RecordedRequest::step`] counts them from 0. A rule answers step
///   `n` with `steps[min(n, len - 1)]`: `[tool_use, text]` makes one tool round trip and
///   then a final answer.
/// - **Turns and `times`.** [`Rule::times`] limits how many turns (step-0 requests) a
///   rule starts. The later steps of a turn stay with the rule that started it, even
///   when its `times` is used up: the mock remembers each turn by the first reply it
///   sent (the `toolu_mock_N` ids of its tool calls, which are unique, or else its text)
///   and finds it again in the conversation history of the next request. A step whose
///   history it does not recognise goes to the first matching rule, `times`
///   notwithstanding.
///
/// ```
/// use claude_code_testkit::{Reply, Rule};
/// use serde_json::json;
///
/// let _bash = Rule::prompt_contains("USE_BASH").steps([
///     Reply::tool_use("Bash", json!({"command": "echo hi > out.txt"})),
///     Reply::text("done"),
/// ]);
/// let _first_fails = Rule::any().times(1).reply(Reply::error(529));
/// let _echo = Rule::model("claude-haiku-5-5")
///     .and(|req| req.step() == 0)
///     .reply_with(|req| Reply::text(format!("you said {}", req.prompt().unwrap_or_default())));
/// ```
#[derive(Clone)]
pub struct Rule {
    predicates: Vec<(String, Predicate)>,
    steps: Vec<Responder>,
    times: Option<usize>,
}

impl Rule {
    fn with(description: String, predicate: Predicate) -> Self {
        Self {
            predicates: vec![(description, predicate)],
            steps: Vec::new(),
            times: None,
        }
    }

    /// Matches every turn.
    pub fn any() -> Self {
        Self {
            predicates: Vec::new(),
            steps: Vec::new(),
            times: None,
        }
    }

    /// Matches turns whose prompt contains `needle`.
    pub fn prompt_contains(needle: impl Into<String>) -> Self {
        let needle = needle.into();
        Self::with(
            format!("prompt contains {needle:?}"),
            Arc::new(move |req| req.prompt().is_some_and(|p| p.contains(&needle))),
        )
    }

    /// Matches turns whose system prompt ([`RecordedRequest::system_text`]) contains
    /// `needle`.
    pub fn system_contains(needle: impl Into<String>) -> Self {
        let needle = needle.into();
        Self::with(
            format!("system contains {needle:?}"),
            Arc::new(move |req| req.system_text().contains(&needle)),
        )
    }

    /// Matches turns sent to exactly this model id (the request's `model` field, e.g.
    /// `claude-sonnet-5-5` for `--model sonnet`).
    pub fn model(model: impl Into<String>) -> Self {
        let model = model.into();
        Self::with(
            format!("model == {model:?}"),
            Arc::new(move |req| req.model() == Some(model.as_str())),
        )
    }

    /// Matches turns for which `predicate` returns true.
    pub fn matching(predicate: impl Fn(&RecordedRequest) -> bool + Send + Sync + 'static) -> Self {
        Self::with("custom predicate".to_owned(), Arc::new(predicate))
    }

    /// Also requires `predicate`: all of a rule's conditions must hold.
    pub fn and(
        mut self,
        predicate: impl Fn(&RecordedRequest) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.predicates
            .push(("custom predicate".to_owned(), Arc::new(predicate)));
        self
    }

    /// The replies for steps 0, 1, ... of a turn; the last one repeats.
    pub fn steps(mut self, replies: impl IntoIterator<Item = Reply>) -> Self {
        self.steps = replies
            .into_iter()
            .map(|reply| -> Responder { Arc::new(move |_: &RecordedRequest| reply.clone()) })
            .collect();
        self
    }

    /// A single reply for every step.
    pub fn reply(self, reply: Reply) -> Self {
        self.steps([reply])
    }

    /// Computes the reply from the request, for every step (see
    /// [`RecordedRequest::step`]).
    pub fn reply_with(
        mut self,
        responder: impl Fn(&RecordedRequest) -> Reply + Send + Sync + 'static,
    ) -> Self {
        self.steps = vec![Arc::new(responder)];
        self
    }

    /// Starts at most `turns` turns; then the rule no longer matches new turns.
    pub fn times(mut self, turns: usize) -> Self {
        self.times = Some(turns);
        self
    }

    pub(crate) fn matches(&self, request: &RecordedRequest) -> bool {
        self.predicates
            .iter()
            .all(|(_, predicate)| predicate(request))
    }

    pub(crate) fn turn_limit(&self) -> Option<usize> {
        self.times
    }

    /// The reply for `request`, or `None` for a rule without replies (the default reply
    /// is used).
    pub(crate) fn reply_for(&self, request: &RecordedRequest) -> Option<Reply> {
        let last = self.steps.len().checked_sub(1)?;
        Some((self.steps[request.step().min(last)])(request))
    }
}

impl fmt::Debug for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let conditions: Vec<&str> = self.predicates.iter().map(|(d, _)| d.as_str()).collect();
        f.debug_struct("Rule")
            .field("conditions", &conditions)
            .field("steps", &self.steps.len())
            .field("times", &self.times)
            .finish()
    }
}
