"""Racing a grid (F-Race, irace): seeds go to the configs still in contention; `hydra/sweeper=race`."""
