"""A light task for the proposal pools' failure tests: no TensorFlow, just a pid file and a sleep."""
import os
import time


def sleepy_task(task):
    """Writes its pid, sleeps, returns; on its first attempt, the 'victim' task waits to be killed."""
    marker = os.path.join(task["dir"], f"{task['name']}.pid")
    first = not os.path.exists(marker)
    with open(marker, "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(60 if (task["name"] == "victim" and first) or task.get("hang") else 0.2)
    if task.get("fail"):
        raise RuntimeError("boom")
    return {"name": task["name"], "pid": os.getpid()}
