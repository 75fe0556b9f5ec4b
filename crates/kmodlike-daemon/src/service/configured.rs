//! The service's side of [`crate::config`]: loading the modules `modules.d` lists, and
//! re-reading the configuration at run time ([`LoaderService::reload_configuration`], called on
//! SIGHUP and by the `ReloadConfiguration` method; the caller logs the outcome).

use std::path::PathBuf;
use std::sync::Mutex;

use super::LoaderService;
use crate::config::{self, Config, FileSettings, ModuleEntry};
use crate::varlink::types::{self, ConfiguredModule, ReloadConfigurationReply};

/// Where the configuration comes from, and what the command line fixed.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    /// `--config`, when given.
    pub explicit: Option<PathBuf>,
    /// `--module-path`: searched before the file's directories, kept across reloads.
    pub cli_module_path: Vec<PathBuf>,
}

/// The configuration in force.
pub(crate) struct Configured {
    source: ConfigSource,
    /// The file read last, when there was one.
    file: Mutex<Option<PathBuf>>,
    /// The settings read at start (changes to those other than `module_path` need a restart).
    start_settings: FileSettings,
    /// The modules listed, as last read.
    modules: Mutex<Vec<ModuleEntry>>,
}

impl From<&ModuleEntry> for ConfiguredModule {
    fn from(m: &ModuleEntry) -> ConfiguredModule {
        ConfiguredModule {
            spec: m.spec.clone(),
            required: m.required,
            isolated: m.isolated,
            seccomp: Some(m.seccomp),
            call_timeout_secs: m.call_timeout_secs,
            crash_loop: m
                .crash_loop
                .map(|(n, w)| types::CrashLoop { max_crashes: u64::from(n), window_secs: w }),
            origin: m.origin.clone(),
        }
    }
}

impl LoaderService {
    /// Record the configuration read at start (for Status and later reloads).
    pub fn set_configuration(&self, source: ConfigSource, config: &Config) {
        self.crash_loops.set(&config.modules);
        let _ = self.configured.set(Configured {
            source,
            file: Mutex::new(config.file.clone()),
            start_settings: config.settings.clone(),
            modules: Mutex::new(config.modules.clone()),
        });
    }

    /// Load the modules of `modules.d` in order. A required one that fails ends the load with
    /// its error (`FILE:LINE: cannot load SPEC: why`); an optional one is a warning. Returns the
    /// names loaded and the failures of optional modules.
    pub fn load_listed(
        &self,
        modules: &[ModuleEntry],
    ) -> Result<(Vec<String>, Vec<String>), String> {
        let mut loaded = Vec::new();
        let mut failed = Vec::new();
        for m in modules {
            // `isolated` runs it in its own process, with `timeout` as its calls' deadline
            // (deadlines apply to isolated modules only).
            let isolation = m.isolated.then(|| kmodlike::Isolation {
                seccomp: m.seccomp,
                call_timeout: m
                    .call_timeout_secs
                    .and_then(|s| std::time::Duration::try_from_secs_f64(s).ok()),
                ..kmodlike::Isolation::default()
            });
            match self.load_tier(&m.spec, true, isolation) {
                Ok(r) => {
                    if !r.already_loaded {
                        tracing::info!(
                            module = %r.module.name,
                            "loaded {} from {} (listed at {})",
                            r.module.name,
                            r.module.path,
                            m.origin
                        );
                    }
                    loaded.push(r.module.name);
                }
                Err(e) => {
                    let why = crate::render::error_message(&e, "");
                    let why = why.lines().next().unwrap_or_default();
                    let text = format!("{}: cannot load {}: {why}", m.origin, m.spec);
                    if m.required {
                        return Err(format!(
                            "{text}; it is required (mark it `optional` there to go on without it)"
                        ));
                    }
                    tracing::warn!(module = %m.spec, "{text} (optional: going on without it)");
                    failed.push(text);
                }
            }
        }
        Ok((loaded, failed))
    }

    /// Re-read the configuration: the module path becomes `--module-path` then the file's
    /// `module_path`; modules newly listed in `modules.d` are loaded (those no longer listed
    /// stay loaded: unload them by hand). Nothing is applied when the configuration does not
    /// read; the error names the file, the line and the key. Other settings take effect at the
    /// next start (a warning names those that changed).
    pub fn reload_configuration(&self) -> Result<ReloadConfigurationReply, String> {
        let Some(c) = self.configured.get() else {
            return Err("the daemon was started without configuration support".into());
        };
        let config = config::read(c.source.explicit.as_deref())
            .map_err(|e| format!("{e}; the running configuration is kept"))?;
        let s = &config.settings;
        let old = &c.start_settings;
        let mut needs_restart = Vec::new();
        if s.state_dir != old.state_dir {
            needs_restart.push("state_dir");
        }
        if s.probe != old.probe {
            needs_restart.push("probe");
        }
        if s.strict != old.strict {
            needs_restart.push("strict");
        }
        if s.max_connections != old.max_connections {
            needs_restart.push("max_connections");
        }
        if s.read_timeout != old.read_timeout {
            needs_restart.push("read_timeout");
        }
        if s.call_timeout != old.call_timeout {
            needs_restart.push("call_timeout");
        }
        if s.crash_loop != old.crash_loop {
            needs_restart.push("crash_loop");
        }
        if s.trust != old.trust {
            needs_restart.push("trust");
        }
        if !needs_restart.is_empty() {
            tracing::warn!(
                "configuration reload: {} changed and take(s) effect at the next start",
                needs_restart.join(", ")
            );
        }
        let mut dirs = c.source.cli_module_path.clone();
        dirs.extend(s.module_path.iter().cloned());
        self.loader.set_module_path(dirs);
        *c.file.lock().unwrap_or_else(|e| e.into_inner()) = config.file.clone();
        *c.modules.lock().unwrap_or_else(|e| e.into_inner()) = config.modules.clone();
        self.crash_loops.set(&config.modules);
        // At run time a required module that fails does not stop the daemon: it is reported.
        let mut loaded = Vec::new();
        let mut failed = Vec::new();
        for m in &config.modules {
            let one = ModuleEntry { required: false, ..m.clone() };
            let (l, f) = self.load_listed(std::slice::from_ref(&one)).unwrap_or_default();
            loaded.extend(l);
            failed.extend(f);
        }
        Ok(ReloadConfigurationReply {
            config_file: config.file.map(|p| p.display().to_string()),
            module_path: self.module_path_strings(),
            loaded,
            failed,
        })
    }

    /// The deadline `modules.d` gives the calls of module `name` (`timeout=SECS`), if any: the
    /// entry whose spec or path names it (its last component, without `.so`).
    pub(crate) fn configured_call_timeout(&self, name: &str) -> Option<std::time::Duration> {
        let c = self.configured.get()?;
        let modules = c.modules.lock().unwrap_or_else(|e| e.into_inner());
        let entry = modules.iter().find(|m| spec_names(&m.spec, name))?;
        entry.call_timeout_secs.and_then(crate::cli::seconds_to_deadline)
    }

    /// The configuration file in force and the modules it lists, for Status.
    pub(crate) fn configuration_facts(&self) -> (Option<String>, Option<Vec<ConfiguredModule>>) {
        match self.configured.get() {
            None => (None, None),
            Some(c) => (
                c.file
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                    .map(|p| p.display().to_string()),
                Some(
                    c.modules
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .iter()
                        .map(ConfiguredModule::from)
                        .collect(),
                ),
            ),
        }
    }
}

/// Whether `spec` (`misc/hello`, `/opt/x/parser.so`) names the module `name` (a module's name is
/// its file name without `.so`).
fn spec_names(spec: &str, name: &str) -> bool {
    let last = spec.rsplit('/').next().unwrap_or(spec);
    last.strip_suffix(".so").unwrap_or(last) == name
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_spec_or_a_path_names_its_module() {
        assert!(super::spec_names("misc/hello", "hello"));
        assert!(super::spec_names("/opt/x/parser.so", "parser"));
        assert!(super::spec_names("hello", "hello"));
        assert!(!super::spec_names("misc/hello", "hell"));
    }
}
