//! The patent Q&A tasks and the one classifier that infers them, used by the SFT build (records
//! without a task key) and by `coretech eval` (eval files without `task_type`).
//!
//! CoreTech-LLM trains two tasks: `ipc` ("which IPC codes does a field involve": the answer
//! lists codes) and `tech` ("which key technologies does a field involve": the answer lists
//! named technologies). The GovPatent table asks both at once (`joint`: "关键技术及其分类号").
//! Anything else is `chat`: kept for training, never in the patent eval set.
//!
//! Rules, in order (every pattern and count is configurable, [`TaskRules`]):
//! 1. `joint`: the question asks for technologies *and* their codes (`joint_question_pattern`).
//! 2. `ipc`: the question asks for classification codes (`ipc_question_pattern`), or the answer
//!    holds at least `ipc_min_codes` IPC codes of subclass depth or more
//!    ([`super::extract`]; a bare class such as `A15` does not count).
//! 3. `tech`: the question is about technologies, directions, fields, methods or applications
//!    (`tech_question_pattern`) **and** the answer lists at least `tech_min_items` items with a
//!    bold name (`1. **人工智能硬件平台**`), the form of every CoreTech key-technology answer.
//! 4. otherwise `chat`: the task cannot be inferred with confidence.
//!
//! Measured on the fixtures: the rules agree with the file's task on all 574 records of the four
//! CoreTech QA files (305 ipc, 269 tech; every tech answer lists ≥ 2 bold-named items, no ipc
//! answer lacks codes or an ipc question), give `joint` for the 8 GovPatent table rows, and
//! `chat` for all 100 general conversations of the FlagAI sharegpt sample (whose numbered lists
//! have no bold names; three of its questions mention "technology", one "text classification").

use std::sync::OnceLock;

use regex::Regex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::extract::{extract_codes, SUBCLASS_LEVEL};

/// A patent Q&A task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// The answer lists IPC codes.
    Ipc,
    /// The answer lists key technologies.
    Tech,
    /// The answer lists key technologies with their IPC codes (both parts are scored).
    Joint,
    /// Anything else (general conversation): trained on, never evaluated as a patent task.
    Chat,
}

/// The task names, their canonical spelling first.
const NAMES: &[(Task, &[&str])] = &[
    (Task::Ipc, &["ipc", "ipc_task"]),
    (Task::Tech, &["tech", "key_tech", "tech_task", "keytech"]),
    (Task::Joint, &["joint", "ipc_tech", "tech_ipc"]),
    (Task::Chat, &["chat", "general"]),
];

impl Task {
    /// The canonical name (`ipc`, `tech`, `joint`, `chat`).
    pub fn as_str(self) -> &'static str {
        NAMES.iter().find(|(t, _)| *t == self).map(|(_, n)| n[0]).expect("every task is named")
    }

    /// The task a name denotes (case-insensitive: `IPC`, `IPC_TASK`, `key_tech`, `general`…).
    pub fn from_name(name: &str) -> Option<Task> {
        let n = name.trim().to_ascii_lowercase();
        NAMES.iter().find(|(_, names)| names.contains(&n.as_str())).map(|(t, _)| *t)
    }

    /// Whether `coretech eval` scores the task (ipc, tech and joint; not chat).
    pub fn is_patent_task(self) -> bool {
        self != Task::Chat
    }

    /// Every task.
    pub const ALL: [Task; 4] = [Task::Ipc, Task::Tech, Task::Joint, Task::Chat];
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How tasks are inferred (rules in the module doc).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TaskRules {
    /// A question matching this regex asks for key technologies and their codes: `joint`.
    pub joint_question_pattern: String,
    /// A question matching this regex asks for classification codes: `ipc`.
    pub ipc_question_pattern: String,
    /// An answer with at least this many IPC codes (subclass or deeper) is `ipc`.
    pub ipc_min_codes: usize,
    /// A question matching this regex may be a key-technology question (`tech` when the answer
    /// also lists `tech_min_items` bold-named items).
    pub tech_question_pattern: String,
    /// Bold-named top-level list items a `tech` answer has at least.
    pub tech_min_items: usize,
}

impl Default for TaskRules {
    fn default() -> Self {
        Self {
            joint_question_pattern: r"(?i)(?:技术|technolog\w*)\s*(?:及其|以及|及|和|与|and(?: their)?)\s*(?:对应的?|相应的?)?\s*(?:IPC\s*)?(?:分类号|分类编号|分类代码|classification|(?:IPC )?codes)".into(),
            ipc_question_pattern: r"IPC|(?i:分类号|分类编号|分类代码|类别代码|专利分类|patent classification|classification (?:codes?|symbols?))".into(),
            ipc_min_codes: 1,
            tech_question_pattern: r"(?i)技术|科技|方向|领域|方法|应用|如何|原理|technolog|techniques?\b|methods?\b|applications?\b|research (?:areas?|directions?)".into(),
            tech_min_items: 1,
        }
    }
}

/// Compiled [`TaskRules`].
#[derive(Debug, Clone)]
pub struct Classifier {
    rules: TaskRules,
    joint: Regex,
    ipc: Regex,
    tech: Regex,
}

impl Classifier {
    /// Compiles the rules; a bad regex names its key (`joint_question_pattern`, …).
    pub fn new(rules: &TaskRules) -> Result<Self, (&'static str, regex::Error)> {
        let re = |key: &'static str, pat: &str| Regex::new(pat).map_err(|e| (key, e));
        Ok(Self {
            rules: rules.clone(),
            joint: re("joint_question_pattern", &rules.joint_question_pattern)?,
            ipc: re("ipc_question_pattern", &rules.ipc_question_pattern)?,
            tech: re("tech_question_pattern", &rules.tech_question_pattern)?,
        })
    }

    /// The classifier of the default rules.
    pub fn default_rules() -> &'static Classifier {
        static C: OnceLock<Classifier> = OnceLock::new();
        C.get_or_init(|| Classifier::new(&TaskRules::default()).expect("default task patterns compile"))
    }

    /// The task of a question/answer pair (all user turns and all assistant turns of a
    /// conversation, each joined).
    pub fn classify(&self, question: &str, answer: &str) -> Task {
        if self.joint.is_match(question) {
            return Task::Joint;
        }
        if self.ipc.is_match(question) {
            return Task::Ipc;
        }
        let codes = extract_codes(answer).iter().filter(|m| m.is_code(SUBCLASS_LEVEL)).count();
        if codes >= self.rules.ipc_min_codes.max(1) {
            return Task::Ipc;
        }
        if self.tech.is_match(question) && bold_named_items(answer) >= self.rules.tech_min_items {
            return Task::Tech;
        }
        Task::Chat
    }
}

fn numbered_marker() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^(?:[0-9]{1,3}[.、)）]|[(（][0-9]{1,3}[)）])").expect("valid regex"))
}

/// How a list item is marked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// `1.`, `1、`, `1)`, `(1)`, `（1）`, also inside a leading `**` or after `#` heading marks.
    Numbered,
    /// `-`, `*`, `•` or `+` followed by a space.
    Bullet,
}

/// A list item of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListItem {
    /// Indentation (a tab counts 4).
    pub indent: usize,
    /// Its marker.
    pub marker: Marker,
    /// The text after the marker (`**1. Name**` keeps its opening `**`, so the bold span is
    /// still the name).
    pub text: String,
}

/// A line as a list item, if it is one (`1.5 GHz` is a number, not a marker).
pub fn list_item(line: &str) -> Option<ListItem> {
    let indent: usize = line.chars().take_while(|c| c.is_whitespace()).map(|c| if c == '\t' { 4 } else { 1 }).sum();
    let mut rest = line.trim_start();
    let heading = rest.starts_with('#');
    if heading {
        rest = rest.trim_start_matches('#').trim_start();
    }
    // `**1. Name**`: the number inside the bold span.
    let bold_number = rest.strip_prefix("**").filter(|r| r.starts_with(|c: char| c.is_ascii_digit()));
    let probe = bold_number.unwrap_or(rest);
    if let Some(m) = numbered_marker().find(probe) {
        let after = &probe[m.end()..];
        if !after.starts_with(|c: char| c.is_ascii_digit()) {
            let text = if bold_number.is_some() { format!("**{after}") } else { after.to_string() };
            return Some(ListItem { indent, marker: Marker::Numbered, text });
        }
    }
    if !heading {
        for b in ['-', '*', '•', '+'] {
            if let Some(after) = rest.strip_prefix(b) {
                if after.starts_with(char::is_whitespace) {
                    return Some(ListItem { indent, marker: Marker::Bullet, text: after.to_string() });
                }
            }
        }
    }
    None
}

/// The items an answer lists: the numbered items at the shallowest indentation among numbered
/// items; if there are none, the bullets at the shallowest bullet indentation (sub-bullets such
/// as `- 简介：…` under each numbered item are not items of the list).
pub fn top_level_items(answer: &str) -> Vec<ListItem> {
    let items: Vec<ListItem> = answer.lines().filter_map(list_item).collect();
    let kind = if items.iter().any(|i| i.marker == Marker::Numbered) { Marker::Numbered } else { Marker::Bullet };
    let Some(depth) = items.iter().filter(|i| i.marker == kind).map(|i| i.indent).min() else { return Vec::new() };
    items.into_iter().filter(|i| i.marker == kind && i.indent == depth).collect()
}

/// The first non-empty `**bold**` span of an item's text.
pub fn bold_name(text: &str) -> Option<&str> {
    let start = text.find("**")?;
    let inner = &text[start + 2..];
    let name = inner[..inner.find("**")?].trim();
    (!name.is_empty()).then_some(name)
}

/// The name of a list item: its first bold span, else its text up to a separator.
pub fn item_name(text: &str) -> String {
    if let Some(name) = bold_name(text) {
        return name.to_string();
    }
    let plain = text.replace("**", "");
    let cut = ["：", ":", "—", "–", " - ", "，", "。", "；"].iter().filter_map(|s| plain.find(s)).min().unwrap_or(plain.len());
    plain[..cut].trim().to_string()
}

/// Numbered top-level list items whose name is bold (`1. **人工智能硬件平台**`): the form of the
/// CoreTech key-technology answers.
pub fn bold_named_items(answer: &str) -> usize {
    top_level_items(answer).iter().filter(|i| i.marker == Marker::Numbered && bold_name(&i.text).is_some()).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_aliases_fold() {
        for t in Task::ALL {
            assert_eq!(Task::from_name(t.as_str()), Some(t));
        }
        assert_eq!(Task::from_name("IPC_TASK"), Some(Task::Ipc));
        assert_eq!(Task::from_name(" key_tech "), Some(Task::Tech));
        assert_eq!(Task::from_name("general"), Some(Task::Chat));
        assert_eq!(Task::from_name("poetry"), None);
    }

    #[test]
    fn rules_by_hand() {
        let c = Classifier::default_rules();
        assert_eq!(c.classify("人工智能相关关键技术及其分类号", "1.人工智能硬件平台\n分类号：H05K、G06F"), Task::Joint);
        assert_eq!(c.classify("智能城市交通领域的关键技术对应的IPC分类号有哪些？", "1. **G08G**"), Task::Ipc);
        assert_eq!(c.classify("哪些分类号？", "没有"), Task::Ipc);
        assert_eq!(c.classify("量子隐形传态的类别代码有哪些？", "1. **H04B10/70**"), Task::Ipc);
        assert_eq!(c.classify("Q", "1. **H04L**"), Task::Ipc);
        assert_eq!(c.classify("人工智能有哪些关键技术？", "1. **人工智能硬件平台**"), Task::Tech);
        // A technology question answered without the key-technology list form is chat.
        assert_eq!(c.classify("What are examples of the impact of technology?", "1. Phones\n2. The web"), Task::Chat);
        assert_eq!(c.classify("Describe NLP for text classification.", "It maps text to labels."), Task::Chat);
        // Bare classes in a chat answer (spreadsheet cells) are not codes.
        assert_eq!(c.classify("Sum a column", "=SUM(A15:A20)"), Task::Chat);
    }

    #[test]
    fn bold_named_items_count_the_top_level_only() {
        let a = "引言。\n1. **硬件平台**\n   - **技术简介**：算力。\n   1. **嵌套**\n2. **通用技术**\n3. 没有粗体\n1.5 GHz";
        assert_eq!(bold_named_items(a), 2);
        assert_eq!(bold_named_items("**1. 量子纠错**：说明\n### 2. **量子中继**"), 2);
        assert_eq!(bold_named_items("- **要点**\n- **其二**"), 0);
        assert_eq!(bold_named_items("1. Tighten the tape.\n2. Hook it."), 0);
    }
}
