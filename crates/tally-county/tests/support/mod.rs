//! What the integration tests share: the power-loss disk of the seeded simulation.

pub mod power_loss;
