"""Integration-test harness: real commonsd and commons-agent processes on
127.0.0.1 with temporary state directories, driven through the real `commons`
CLI, and stopped by PID. Standard library only."""
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

BUILD = os.environ.get("COMMONS_BUILD", os.path.join(os.path.dirname(__file__), "..", "..", "build"))


def binary(rel):
    path = os.path.join(BUILD, rel)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing: build the project first (COMMONS_BUILD={BUILD})")
    return path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def own_cgroup2_dir():
    """This process's folder in the cgroup v2 hierarchy, under which an agent it
    starts makes its own (agent/contain.c, own_cgroup_dir); None without cgroup v2."""
    mount = path = None
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                # "<id> <parent> <dev> <root> <mount point> ... - <fs type> ..."
                fields, sep, fs = line.partition(" - ")
                if sep and fs.startswith("cgroup2 "):
                    mount = tuple(fields.split()[3:5])
                    break
        with open("/proc/self/cgroup") as f:
            path = next((line[3:].strip() for line in f if line.startswith("0::")), None)
    except OSError:
        return None
    if not mount or path is None:
        return None
    root, mnt = mount
    if root != "/" and path.startswith(root):
        path = path[len(root):]
    return mnt + ("" if path == "/" else path)


# Slower builds (sanitizers) stretch every wait: COMMONS_TEST_TIME_SCALE=4 makes 10 s 40 s.
TIME_SCALE = float(os.environ.get("COMMONS_TEST_TIME_SCALE", "1"))


def wait_until(pred, timeout=10.0, step=0.05, what="condition"):
    timeout *= TIME_SCALE
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def read_text(path):
    with open(path) as f:
        return f.read()


def rmdir_gone(path):
    """rmdir that tells whether path is gone (True) or still there (False)."""
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


class Daemon:
    """A detached process (not our child) driven like a Popen: poll, send_signal, wait."""

    def __init__(self, pid):
        self.pid = pid
        self.returncode = None

    def poll(self):
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                alive = f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            alive = False
        return None if alive else 0  # its exit status is its parent's to know, not ours

    def send_signal(self, sig):
        if self.poll() is None:
            os.kill(self.pid, sig)

    def wait(self, timeout=None):
        wait_until(lambda: self.poll() is not None, timeout=timeout or 60, what=f"pid {self.pid} to end")
        return 0


class Cluster:
    """A scheduler and any number of agents in one temporary directory."""

    def __init__(self, node_timeout=30, sync="full"):
        self.dir = tempfile.mkdtemp(prefix="commons-it-")
        self.state = os.path.join(self.dir, "state")
        self.port = free_port()
        self.addr = f"tcp://127.0.0.1:{self.port}"
        self.node_timeout = node_timeout
        self.sync = sync
        # Service replicas of this cluster listen in a window of its own, so a cluster
        # of another test on this host is unlikely to hold the same ports.
        base = 20000 + 100 * random.randrange(127)
        self.service_ports = f"{base}-{base + 99}"
        self.sched = None
        self.agents = {}
        self.logs = []

    # -- processes -----------------------------------------------------------
    def start_scheduler(self, extra=()):
        log = open(os.path.join(self.dir, "commonsd.log"), "ab")
        self.logs.append(log)
        self.sched = subprocess.Popen(
            [binary("scheduler/commonsd"), "--state", self.state, "--listen", self.addr, "--foreground",
             "--node-timeout", str(self.node_timeout), "--sync", self.sync, "--service-ports", self.service_ports,
             *extra],
            stdout=log, stderr=log)
        wait_until(lambda: os.path.exists(os.path.join(self.state, "admin.token")), what="commonsd start")
        wait_until(lambda: self.cli("whoami", check=False).returncode == 0, what="commonsd to answer")
        return self.sched

    def kill_scheduler(self, sig=signal.SIGKILL):
        self.sched.send_signal(sig)
        self.sched.wait(timeout=10)

    def start_agent(self, name, cpus=4, memory_mb=4096, gpus=0, extra=(), detach=False):
        """Starts agent `name` (state dir agent-NAME) and waits for it to register. Detached
        (no --foreground), it logs to agent-NAME/agent.log and is followed by its pid file."""
        state = os.path.join(self.dir, f"agent-{name}")
        argv = [binary("agent/commons-agent"), "--server", self.addr, "--name", name, "--key-file",
                os.path.join(self.state, "cluster.key"), "--state", state, "--cpus", str(cpus),
                "--memory-mb", str(memory_mb), "--gpus", str(gpus), "--kill-grace", "1", *extra]
        if detach:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            if r.returncode != 0:
                raise AssertionError(f"commons-agent exited {r.returncode}: {r.stderr}")
            pidfile = os.path.join(state, "agent.pid")
            wait_until(lambda: os.path.exists(pidfile), what=f"{pidfile}")
            p = Daemon(int(read_text(pidfile)))
        else:
            log = open(os.path.join(self.dir, f"agent-{name}.log"), "ab")
            self.logs.append(log)
            p = subprocess.Popen(argv + ["--foreground"], stdout=log, stderr=log)
        self.agents[name] = p
        wait_until(lambda: any(n["name"] == name and n["state"] in ("IDLE", "MIXED", "ALLOCATED")
                               for n in self.json("nodes")), what=f"agent {name} to register")
        return p

    def stop(self):
        for p in list(self.agents.values()) + ([self.sched] if self.sched else []):
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait(timeout=10)
        # Jobs outlive a killed agent by design; end them so no test leaves processes behind.
        for name in self.agents:
            subprocess.run([binary("agent/commons-agent"), "--name", name, "--state",
                            os.path.join(self.dir, f"agent-{name}"), "--kill-jobs"],
                           capture_output=True, timeout=60)
        for log in self.logs:
            log.close()
        self.remove_cgroups()

    def agent_cgroup(self, name):
        """The cgroup folder of agent `name`'s jobs: commons-<node>-<first 8 hex digits of
        the SHA-256 of its state dir's real path> (agent/runner.c), or None."""
        base = own_cgroup2_dir()
        if base is None:
            return None
        state = os.path.realpath(os.path.join(self.dir, f"agent-{name}"))
        return os.path.join(base, f"commons-{name}-{hashlib.sha256(state.encode()).hexdigest()[:8]}")

    def remove_cgroups(self):
        """Removes the cgroup folders of this cluster's agents that --kill-jobs left. It opens
        the state dir as a restart does, so it already removes the empty folder that an agent
        killed in the middle of a launch leaves (named by no record). Fails when a folder still
        holds processes after --kill-jobs (a job that outlived it: killed here, and reported)
        or cannot be removed."""
        outlived, left = [], []
        for name in self.agents:
            base = self.agent_cgroup(name)
            if not base or not os.path.isdir(base):
                continue  # subreaper containment, or nothing left
            jobs = [os.path.join(base, d) for d in sorted(os.listdir(base)) if d.startswith("job-")]
            for path in jobs:
                procs = os.path.join(path, "cgroup.procs")
                try:
                    wait_until(lambda: not read_text(procs).strip(), timeout=5,
                               what=f"the processes of {path} to end")
                except AssertionError:
                    outlived.append(f"{path}: pids {read_text(procs).split()}")
                    with open(os.path.join(path, "cgroup.kill"), "w") as f:
                        f.write("1")
            for path in jobs + [base]:
                try:  # a folder whose last process just ended can be busy for a moment
                    wait_until(lambda: rmdir_gone(path), timeout=5, what=f"rmdir {path}")
                except AssertionError:
                    left.append(path)
        if outlived or left:
            raise AssertionError("cgroups of this test's agents: processes outlived --kill-jobs: "
                                 f"{outlived or 'none'}; folders that could not be removed: {left or 'none'}")

    def cleanup(self):
        try:
            self.stop()
        finally:
            if os.environ.get("COMMONS_KEEP_TEST_DIRS"):
                print("kept", self.dir)
            else:
                shutil.rmtree(self.dir, ignore_errors=True)

    def log(self, name="commonsd.log"):
        with open(os.path.join(self.dir, name), errors="replace") as f:
            return f.read()

    # -- CLI -----------------------------------------------------------------
    def env(self, token=None, token_file=None):
        env = dict(os.environ)
        env.pop("COMMONS_TOKEN", None)
        env["COMMONS_ADDR"] = self.addr
        if token is not None:
            env["COMMONS_TOKEN"] = token
        else:
            env["COMMONS_TOKEN_FILE"] = token_file or os.path.join(self.state, "admin.token")
        return env

    def cli(self, *args, token=None, check=True, cwd=None, input=None):
        p = subprocess.run([binary("cli/commons"), *args], env=self.env(token), capture_output=True,
                           text=True, cwd=cwd or self.dir, input=input, timeout=60)
        if check and p.returncode != 0:
            raise AssertionError(f"commons {' '.join(args)} exited {p.returncode}: {p.stderr}{p.stdout}")
        return p

    def json(self, *args, token=None):
        return json.loads(self.cli("--json", *args, token=token).stdout)

    def add_user(self, name, account, unix_user=None, admin=False):
        if not any(a["name"] == account for a in self.json("admin", "account", "list")):
            self.cli("admin", "account", "add", account)
        args = ["admin", "user", "add", name, "--account", account]
        if unix_user:
            args += ["--unix-user", unix_user]
        if admin:
            args.append("--admin")
        return self.cli(*args).stdout.strip()

    def job(self, job_id, token=None):
        return self.json("show", str(job_id), token=token)

    def wait_state(self, job_id, states, timeout=20, token=None):
        states = (states,) if isinstance(states, str) else states
        return wait_until(lambda: (j := self.job(job_id, token)) and j["state"] in states and j,
                          timeout=timeout, what=f"job {job_id} to reach {states}")


class ClusterTest(unittest.TestCase):
    node_timeout = 30

    def setUp(self):
        self.c = Cluster(node_timeout=self.node_timeout)
        self.addCleanup(self.c.cleanup)
        self.addCleanup(self._dump_logs_on_failure)

    def _dump_logs_on_failure(self):
        outcome = getattr(self, "_outcome", None)
        errors = getattr(getattr(outcome, "result", None), "errors", []) + \
            getattr(getattr(outcome, "result", None), "failures", [])
        if any(t is self for t, _ in errors):
            for name in sorted(os.listdir(self.c.dir)):
                if name.endswith(".log"):
                    print(f"---- {name} ----\n{self.c.log(name)[-4000:]}")
