"""The VISTA-Gym environment: tasks, tool-calling episodes, rewards, expert trajectories.

Importing it registers the gymnasium ids `VistaGym/<Family>-v0` (`env.registration`)."""

from vista_jax.env.budget import (ApproxTokenCounter, Budgets, PromptTooLong, TokenCounter,
                                  TokenizerCounter)
from vista_jax.env.env import MessagesSpace, TextSpace, VectorVistaEnv, VistaEnv, system_prompt
from vista_jax.env.expert import expert_messages, generate_expert_dataset
from vista_jax.env.mixture import TaskMixture
from vista_jax.env.registration import register_envs
from vista_jax.env.rewards import RewardConfig, compute_reward, verify
from vista_jax.env.tasks.base import (SPLIT_BASE, PlanStep, Task, TaskFamily, families,
                                      get_family, make_task, make_tasks, register_family)
from vista_jax.env.trajectory_log import TrajectoryWriter, read_trajectories

register_envs()

__all__ = [
    "ApproxTokenCounter", "Budgets", "MessagesSpace", "PlanStep", "PromptTooLong",
    "RewardConfig", "SPLIT_BASE", "Task", "TaskFamily", "TaskMixture", "TextSpace",
    "TokenCounter", "TokenizerCounter", "TrajectoryWriter", "VectorVistaEnv", "VistaEnv",
    "compute_reward", "expert_messages", "families", "generate_expert_dataset", "get_family",
    "make_task", "make_tasks", "read_trajectories", "register_envs", "register_family",
    "system_prompt", "verify",
]
