//! Slash commands typed into the input line of `qpc tui` (`/create`, `/add`,
//! `/dm`, ...): parsing text into a [`Slash`] and the help text.
//!
//! Parsing only: what a command does to the app state or the network is
//! decided in `app.rs`. A line starting with `//` is not a command but a
//! message beginning with `/`.

/// One parsed slash command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Slash {
    /// `/create NAME`: create a group and switch to it.
    Create(String),
    /// `/add USER...`: add users to the selected group.
    Add(Vec<String>),
    /// `/remove USER...`: remove users from the selected group.
    Remove(Vec<String>),
    /// `/leave`: leave the selected group.
    Leave,
    /// `/dm USER`: open the direct conversation with a user.
    Dm(String),
    /// `/verify [USER]`: show the safety number (default: the direct conversation's peer).
    Verify(Option<String>),
    /// `/help`.
    Help,
    /// `/quit`.
    Quit,
}

/// What a submitted input line is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Submitted {
    /// A message to send.
    Text(String),
    /// A slash command.
    Command(Slash),
}

/// Lines of the `/help` popup.
pub(crate) const HELP: &[&str] = &[
    "/create NAME      create a group",
    "/add USER...      add users to this group",
    "/remove USER...   remove users from this group",
    "/leave            leave this group",
    "/dm USER          direct conversation with USER",
    "/verify [USER]    show the safety number",
    "/quit             leave qpc (also Ctrl-C)",
    "",
    "Tab Ctrl-N Alt-Down   next conversation",
    "S-Tab Ctrl-P Alt-Up   previous conversation",
    "Up Down               input history",
    "PageUp PageDown       scroll messages",
    "Enter send   Esc clear   //text sends /text",
];

/// Classifies a submitted line: a message, a command, or a usage error
/// (the error is shown to the user as a system line).
pub(crate) fn parse(line: &str) -> Result<Submitted, String> {
    if let Some(literal) = line.strip_prefix("//") {
        return Ok(Submitted::Text(format!("/{literal}")));
    }
    let Some(command) = line.trim_start().strip_prefix('/') else {
        return Ok(Submitted::Text(line.to_owned()));
    };
    let mut words = command.split_whitespace();
    let name = words.next().unwrap_or_default();
    let args: Vec<String> = words.map(str::to_owned).collect();
    let slash = match name {
        "create" => Slash::Create(one(&args, "/create NAME")?),
        "add" | "invite" => Slash::Add(some(args, "/add USER...")?),
        "remove" | "kick" => Slash::Remove(some(args, "/remove USER...")?),
        "leave" | "part" => none(&args, Slash::Leave, "/leave")?,
        "dm" | "msg" | "query" => Slash::Dm(one(&args, "/dm USER")?.trim_start_matches('@').to_owned()),
        "verify" => match args.as_slice() {
            [] => Slash::Verify(None),
            [user] => Slash::Verify(Some(user.trim_start_matches('@').to_owned())),
            _ => return Err(usage("/verify [USER]")),
        },
        "help" | "h" | "?" => Slash::Help,
        "quit" | "q" | "exit" => Slash::Quit,
        "" => return Err("empty command; /help lists the commands".to_owned()),
        other => return Err(format!("unknown command /{other}; /help lists the commands")),
    };
    Ok(Submitted::Command(slash))
}

fn usage(syntax: &str) -> String {
    format!("usage: {syntax}")
}

fn one(args: &[String], syntax: &str) -> Result<String, String> {
    match args {
        [arg] => Ok(arg.clone()),
        _ => Err(usage(syntax)),
    }
}

fn some(args: Vec<String>, syntax: &str) -> Result<Vec<String>, String> {
    if args.is_empty() {
        return Err(usage(syntax));
    }
    Ok(args.into_iter().map(|user| user.trim_start_matches('@').to_owned()).collect())
}

fn none(args: &[String], slash: Slash, syntax: &str) -> Result<Slash, String> {
    if args.is_empty() {
        Ok(slash)
    } else {
        Err(usage(syntax))
    }
}

#[cfg(test)]
mod tests {
    use super::{parse, Slash, Submitted};

    fn check(line: &str, expected: Result<Submitted, &str>) {
        assert_eq!(parse(line), expected.map_err(str::to_owned), "{line:?}");
    }

    fn command(slash: Slash) -> Result<Submitted, &'static str> {
        Ok(Submitted::Command(slash))
    }

    #[test]
    fn commands_and_messages() {
        check("hello /there", Ok(Submitted::Text("hello /there".into())));
        check("//shrug", Ok(Submitted::Text("/shrug".into())));
        check("/create team", command(Slash::Create("team".into())));
        check("  /add bob @carol", command(Slash::Add(vec!["bob".into(), "carol".into()])));
        check("/remove bob", command(Slash::Remove(vec!["bob".into()])));
        check("/leave", command(Slash::Leave));
        check("/dm @bob", command(Slash::Dm("bob".into())));
        check("/verify", command(Slash::Verify(None)));
        check("/verify bob", command(Slash::Verify(Some("bob".into()))));
        check("/help", command(Slash::Help));
        check("/q", command(Slash::Quit));
    }

    #[test]
    fn usage_errors() {
        check("/create", Err("usage: /create NAME"));
        check("/create two words", Err("usage: /create NAME"));
        check("/add", Err("usage: /add USER..."));
        check("/remove", Err("usage: /remove USER..."));
        check("/leave now", Err("usage: /leave"));
        check("/dm", Err("usage: /dm USER"));
        check("/verify a b", Err("usage: /verify [USER]"));
        check("/", Err("empty command; /help lists the commands"));
        check("/frobnicate x", Err("unknown command /frobnicate; /help lists the commands"));
    }
}
