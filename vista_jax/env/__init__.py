"""The VISTA-Gym environment: tasks, tool-calling episodes, rewards, expert trajectories."""

from vista_jax.env.env import VectorVistaEnv, VistaEnv, system_prompt
from vista_jax.env.expert import expert_messages, generate_expert_dataset
from vista_jax.env.rewards import RewardConfig, compute_reward, verify
from vista_jax.env.tasks.base import (SPLIT_BASE, PlanStep, Task, TaskFamily, get_family,
                                      make_task, make_tasks, register_family)
from vista_jax.env.trajectory_log import TrajectoryWriter, read_trajectories

__all__ = [
    "PlanStep", "RewardConfig", "SPLIT_BASE", "Task", "TaskFamily", "TrajectoryWriter",
    "VectorVistaEnv", "VistaEnv", "compute_reward", "expert_messages", "generate_expert_dataset",
    "get_family", "make_task", "make_tasks", "read_trajectories", "register_family",
    "system_prompt", "verify",
]
