//! Generated code for goim's gRPC packages, with goim's package, service, method and field names,
//! so a goim comet, logic or job can talk to Starling's.

/// `goim.protocol`: the packet as a protobuf message.
pub mod protocol {
    tonic::include_proto!("goim.protocol");
}

/// `goim.comet`: the service every comet serves to job.
pub mod comet {
    tonic::include_proto!("goim.comet");
}

/// `goim.logic`: the service logic serves to comets, and `PushMsg`, the message job consumes.
pub mod logic {
    tonic::include_proto!("goim.logic");
}

pub mod tuning;
