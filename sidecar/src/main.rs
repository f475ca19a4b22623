//! agentcom-sidecar: the agent-side relay. Built out in the sidecar issue; for now
//! it only proves that the wire types build without the hub's server stack.

fn main() {
    let version = agentcom_hub::protocol::PROTOCOL_VERSION;
    println!("agentcom-sidecar (protocol {version}): not implemented yet");
}
