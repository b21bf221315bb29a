//! `berth check`, beyond parsing: the files the configuration names that berth reads at run
//! time, checked the way berth will read them.

use berth_core::config::Config;

/// Checks the files the configuration names that berth reads at run time (htpasswd files,
/// token secrets),
/// for `berth check`: one line per problem, with the route's key path.
pub fn check_files(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, route) in config.routes.iter().enumerate() {
        let Some(auth) = &route.auth else { continue };
        let path = auth.htpasswd.display();
        let found = std::fs::read_to_string(&auth.htpasswd)
            .map_err(|e| vec![format!("cannot read: {e}")])
            .and_then(|text| berth_plugins::builtin::parse_htpasswd(&text).map(|_| ()));
        if let Err(errors) = found {
            for e in errors {
                problems.push(format!("route[{i}].auth.htpasswd: {path}: {e}"));
            }
        }
        if let Some(secret) = &auth.token_secret_file {
            if let Err(e) = berth_plugins::builtin::registry_token::read_secret(secret) {
                problems.push(format!("route[{i}].auth.token-secret-file: {e}"));
            }
        }
    }
    problems
}
