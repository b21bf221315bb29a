//! `berth check`, beyond parsing: the files the configuration names that berth reads at run
//! time, checked the way berth will read them.

use berth_core::config::Config;

/// Checks the files the configuration names that berth reads at run time (htpasswd files,
/// groups files, token secrets, client CA files),
/// for `berth check`: one line per problem, with the route's key path.
pub fn check_files(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, route) in config.routes.iter().enumerate() {
        if let Some(client) = &route.client_auth {
            if let Err(errors) =
                <berth_plugins::builtin::ClientCa as berth_plugins::builtin::Contents>::read(
                    &client.ca,
                )
            {
                for e in errors {
                    problems.push(format!(
                        "route[{i}].client-ca: {}: {e}",
                        client.ca.display()
                    ));
                }
            }
        }
        let Some(auth) = &route.auth else { continue };
        let path = auth.htpasswd.display();
        if let Err(errors) = berth_plugins::builtin::read_htpasswd(&auth.htpasswd) {
            for e in errors {
                problems.push(format!("route[{i}].auth.htpasswd: {path}: {e}"));
            }
        }
        if let Some(groups) = &auth.groups {
            if let Err(errors) =
                <berth_core::route::Groups as berth_plugins::builtin::Contents>::read(groups)
            {
                for e in errors {
                    problems.push(format!("route[{i}].auth.groups: {}: {e}", groups.display()));
                }
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
