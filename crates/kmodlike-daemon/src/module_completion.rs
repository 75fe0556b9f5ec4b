//! Completion of loaded module names in the shell completion scripts.
//!
//! clap_complete writes static scripts: they know the commands and options but not which
//! modules are loaded. These additions ask the daemon, through `kmodctl list --names` (one name a
//! line, nothing on error), when a module name is wanted: the NAME of unload, reload, clear, call
//! and info (and their aliases), and the value of `crashes --module`. A `--socket PATH` already
//! on the command line is passed on.

/// The commands whose first argument is a loaded module's name.
pub const NAME_COMMANDS: &[&str] =
    &["unload", "rmmod", "reload", "clear", "call", "info", "modinfo"];

/// Appended to the bash script: a wrapper around clap's `_kmodctl` that adds module names.
pub fn bash_addition() -> String {
    let commands = NAME_COMMANDS.join("|");
    format!(
        r#"
# Loaded module names, from the daemon (kmodctl list --names).
_kmodctl_module_names() {{
    local socket=() i
    for ((i = 1; i < ${{#COMP_WORDS[@]}} - 1; i++)); do
        if [[ ${{COMP_WORDS[i]}} == --socket ]]; then socket=(--socket "${{COMP_WORDS[i+1]}}"); fi
    done
    kmodctl "${{socket[@]}}" list --names 2>/dev/null
}}

_kmodctl_with_modules() {{
    _kmodctl "$@"
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    [[ $cur == -* ]] && return
    if [[ $prev == --module ]]; then
        COMPREPLY=( $(compgen -W "$(_kmodctl_module_names)" -- "$cur") )
        return
    fi
    # The first word after a name-taking command that is not an option or its value.
    local i sub="" args=0
    for ((i = 1; i < COMP_CWORD; i++)); do
        local w="${{COMP_WORDS[i]}}"
        case "$w" in
            --socket|--timeout) ((i++)); continue ;;
            -*) continue ;;
        esac
        if [[ -z $sub ]]; then sub="$w"; else ((args++)); fi
    done
    case "$sub" in
        {commands})
            if ((args == 0)); then
                COMPREPLY=( $(compgen -W "$(_kmodctl_module_names)" -- "$cur") )
            fi
            ;;
    esac
}}
complete -F _kmodctl_with_modules -o nosort -o bashdefault -o default kmodctl
"#
    )
}

/// The zsh script with module names where clap left `_default`, and the helper they call.
pub fn zsh_with_modules(script: &str) -> String {
    let helper = r#"
# Loaded module names, from the daemon (kmodctl list --names).
_kmodctl_module_names() {
    local -a names socket
    local i=${words[(I)--socket]}
    (( i > 0 )) && socket=(--socket "${words[i+1]}")
    names=(${(f)"$(kmodctl $socket list --names 2>/dev/null)"})
    _describe -t modules 'loaded module' names
}
"#;
    let mut out = String::new();
    for line in script.lines() {
        let is_module_arg = (line.starts_with("':name -- The module")
            || line.starts_with("'::name -- The module")
            || line.starts_with("':module -- A loaded module")
            || line.starts_with("'--module=["))
            && line.contains(":_default'");
        if is_module_arg {
            out.push_str(&line.replace(":_default'", ":_kmodctl_module_names'"));
        } else {
            out.push_str(line);
        }
        out.push('\n');
        if line.starts_with("#compdef") {
            out.push_str(helper);
        }
    }
    out
}

/// Appended to the fish script.
pub fn fish_addition() -> String {
    let commands = NAME_COMMANDS.join(" ");
    format!(
        r#"
# Loaded module names, from the daemon (kmodctl list --names).
complete -c kmodctl -n "__fish_seen_subcommand_from {commands}" -f -a "(kmodctl list --names 2>/dev/null)"
complete -c kmodctl -n "__fish_seen_subcommand_from crashes" -l module -f -r -a "(kmodctl list --names 2>/dev/null)"
"#
    )
}
