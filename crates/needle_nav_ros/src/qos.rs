//! QoS profile per kind of topic (see [`needle_nav_core::interfaces::QosKind`]).

use needle_nav_core::interfaces::QosKind;
use r2r::QosProfile;

pub fn profile(kind: QosKind) -> QosProfile {
    match kind {
        QosKind::SensorData => QosProfile::sensor_data().keep_last(5),
        QosKind::LatchedState => QosProfile::default().reliable().transient_local().keep_last(1),
        QosKind::ReliableStream => QosProfile::default().reliable().volatile().keep_last(10),
        QosKind::Service => QosProfile::services_default(),
    }
}
