"""Shop the look: a cross-modal product search built from meshflow's reusable Executors."""
