//! A complete receiving backend: `cargo run -p followd-receiver --example backend`, then point an
//! app's webhook URL at http://127.0.0.1:9000/imcallback (with `allow_private_destinations = true`).

use followd_receiver::{axum::webhook_router, Event, Verifier};

#[tokio::main]
async fn main() {
    let verifier = Verifier::new(1400000000); // add .token("…") and .signing_secret("whsec_…") as configured
    let app = webhook_router(verifier, |hook| async move {
        match &hook.event {
            Event::FollowAdd { from, to, .. } => println!("{from} followed {to:?}"),
            Event::FollowDelete { from, to, .. } => println!("{from} unfollowed {to:?}"),
            Event::Unknown { command, .. } => println!("ignored {command}"),
        }
        Ok(())
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:9000").await.expect("bind 127.0.0.1:9000");
    axum::serve(listener, app).await.expect("serve");
}
