"""Multi-node Open MPI jobs end to end: commonsd and two real agents on this machine
acting as nodes n1 and n2 run tests/mpi/mpi_report.c (built here with mpicc) as a
2-node x 2-rank job. The first node's agent runs mpirun with a hostfile/rankfile made
from the allocation; mpirun starts its daemons on n1 and n2 through commons-rsh and
commonsd's spawn relay (no ssh). All four ranks report, each on its node and bound to a
distinct allocated PU; cancelling the running job ends every rank on both nodes. The same
with subreaper containment, and on two XML nodes (bindings recorded: ranks unbound).

Both "nodes" are this one host, so Open MPI's shared-memory transport (whose segment
names use the host name) is turned off for these jobs (OMPI_MCA_btl=^vader)."""
import os
import re
import shutil
import subprocess
import time
import unittest

from harness import ClusterTest, binary, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "..", "mpi", "mpi_report.c")
LINE = re.compile(r"^rank (\d+) of (\d+) node (\S+) host \S+ cpus (\S+) pid (\d+)$", re.M)
PUS = len(os.sched_getaffinity(0))


def cpu_set(text):
    out = set()
    for part in text.split(","):
        a, _, b = part.partition("-")
        out.update(range(int(a), int(b or a) + 1))
    return out


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def my_cpus():
    with open("/proc/self/status") as f:
        return cpu_set(f.read().split("Cpus_allowed_list:")[1].split()[0])



class OpenMpiCrashed(Exception):
    """The MPI job failed before all ranks reported (Open MPI's own daemon crashed)."""

class MpiBase(ClusterTest):
    """commonsd, the MPI program, and two agents n1 and n2 (start_nodes)."""

    def setUp(self):
        super().setUp()
        for tool in ("mpicc", "mpirun"):
            self.assertIsNotNone(shutil.which(tool), f"{tool} not found: install openmpi-bin and libopenmpi-dev")
        self.prog = os.path.join(self.c.dir, "mpi_report")
        subprocess.run(["mpicc", "-O1", "-o", self.prog, SOURCE], check=True, timeout=120)
        os.chmod(self.c.dir, 0o755)
        self.c.start_scheduler()
        self.start_nodes()

    def submit(self, *args):
        out = os.path.join(self.c.dir, "mpi-%j.out")
        return self.c.json("submit", "-N", "2", "--ntasks-per-node", "2", "--mpi", "-o", out,
                           "--export", "OMPI_MCA_btl=^vader", "--", self.prog, *args)["job_id"]

    def ranks(self, job_id, n=4, timeout=60):
        path = os.path.join(self.c.dir, f"mpi-{job_id}.out")

        def lines():
            if not os.path.exists(path):
                return None
            with open(path) as f:
                found = LINE.findall(f.read())
            if len(found) >= n:
                return found
            if self.c.job(job_id)["state"] == "FAILED":
                raise OpenMpiCrashed(f"job {job_id} failed before its ranks reported: {self.c.job(job_id)}")
            return None
        return wait_until(lines, timeout=timeout, step=0.2, what=f"{n} ranks of job {job_id} to report")

    def launch(self, *args):
        """submit() and ranks(), once more if Open MPI itself crashed first: its orted was
        seen to segfault (exit 139) in about one CI run in four when both "nodes" are one
        host. The retry is printed, and a second crash fails the test."""
        jid = self.submit(*args)
        try:
            return jid, self.ranks(jid)
        except OpenMpiCrashed as e:
            print(f"\nretrying once after an Open MPI crash: {e}")
        jid = self.submit(*args)
        return jid, self.ranks(jid)

    def check_placement(self, ranks):
        self.assertEqual(sorted(int(r[0]) for r in ranks), [0, 1, 2, 3])
        self.assertTrue(all(r[1] == "4" for r in ranks))
        by_node = {}
        for rank, _, node, cpus, _ in ranks:
            by_node.setdefault(node, []).append((int(rank), cpu_set(cpus)))
        self.assertEqual(sorted(by_node), ["n1", "n2"], ranks)
        for node, rs in by_node.items():
            self.assertEqual(len(rs), 2, ranks)
            # Ranks 0-1 share one node and 2-3 the other (hostfile slots = tasks per node).
            self.assertIn(sorted(r for r, _ in rs), ([0, 1], [2, 3]))
            sets = [s for _, s in rs]
            self.assertTrue(all(len(s) == 1 for s in sets), f"{node}: each rank on one PU: {rs}")
            self.assertNotEqual(sets[0], sets[1], f"{node}: ranks share a PU: {rs}")
        return by_node


class MpiJobs(MpiBase):
    agent_extra = ()

    def start_nodes(self):
        # --cpus equal to this machine's PUs: the agents report their hwloc topology
        # and commonsd gives each rank specific PUs.
        for name in ("n1", "n2"):
            self.c.start_agent(name, cpus=PUS, extra=self.agent_extra)

    def test_two_nodes_two_ranks_each(self):
        jid, ranks = self.launch()
        self.check_placement(ranks)
        job = self.c.wait_state(jid, ("COMPLETED", "FAILED", "CANCELLED"), timeout=60)
        self.assertEqual((job["state"], job["exit_code"]), ("COMPLETED", 0), job)
        # The daemons ran as spawns on both nodes and ended with the job: by themselves, or,
        # one still on its way out when mpirun has exited, ended by the job's end (as Slurm
        # ends a finished job's steps).
        for name in ("n1", "n2"):
            ended = re.compile(rf"job {jid}\.0 \(spawn\) ended: (exit 0 signal 0|.*\(cancelled\))")
            log = wait_until(lambda: ended.search(self.c.log(f"agent-{name}.log")) and self.c.log(f"agent-{name}.log"),
                             what=f"the spawn on {name} to end")
            self.assertRegex(log, rf"job {jid}\.0 spawn started")
            if "(cancelled)" in log:
                self.assertRegex(log, rf"job {jid}\.0 spawn \d+: kill \(job_ended\)")

    def test_ranks_bound_to_allocated_pus_and_cancel_ends_all(self):
        jid, ranks = self.launch("120")
        by_node = self.check_placement(ranks)
        for node, rs in by_node.items():
            used = set(self.c.json("nodes", "--topology", node)["pus_used"])
            self.assertEqual(set().union(*(s for _, s in rs)), used, f"{node}: ranks vs allocated PUs")
        pids = [int(r[4]) for r in ranks]
        self.assertTrue(all(alive(p) for p in pids))
        self.c.cli("cancel", str(jid))
        self.c.wait_state(jid, "CANCELLED", timeout=30)
        wait_until(lambda: not any(alive(p) for p in pids), timeout=30, what="every rank to end")
        # No daemon of the job is left on either node.
        for name in ("n1", "n2"):
            wait_until(lambda: re.search(rf"job {jid}\.0 \(spawn\) ended", self.c.log(f"agent-{name}.log")),
                       timeout=30, what=f"the spawn on {name} to end")


    def test_commonsd_restart_keeps_running_job(self):
        """kill -9 of commonsd while the job runs: its commons-rsh processes keep asking,
        the restarted commonsd adopts the daemons' spawns from the agents, and the job
        still ends COMPLETED with every rank (before, mpirun lost its daemons: exit 255)."""
        jid, ranks = self.launch("8")
        self.assertEqual(len(ranks), 4)
        self.c.kill_scheduler()
        self.c.start_scheduler()
        job = self.c.wait_state(jid, ("COMPLETED", "FAILED", "CANCELLED"), timeout=90)
        self.assertEqual((job["state"], job["exit_code"]), ("COMPLETED", 0), job)
        self.assertRegex(self.c.log("commonsd.log"), rf"spawn \d+ of job {jid} on n[12] adopted after a restart")
        for name in ("n1", "n2"):
            self.assertRegex(self.c.log(f"agent-{name}.log"), rf"job {jid}\.0 \(spawn\) ended: exit 0")


class MpiJobsSubreaper(MpiJobs):
    """The same with subreaper containment (process trees found by process group and
    environment instead of cgroups)."""
    agent_extra = ("--containment", "subreaper")


class MpiOnXmlNodes(MpiBase):
    """Two agents playing the 2 x 56-core node of configs/topologies: bindings are recorded,
    not applied, so mpirun gets no rankfile (--bind-to none) and the ranks run unbound."""

    def start_nodes(self):
        xml = os.path.join(HERE, "..", "..", "configs", "topologies", "gpu-2x56c-8gpu.xml")
        for name in ("n1", "n2"):
            self.c.start_agent(name, cpus=112, memory_mb=500000, extra=("--topology", xml))

    def test_two_nodes_two_ranks_each(self):
        jid, ranks = self.launch()
        self.assertEqual(sorted(int(r[0]) for r in ranks), [0, 1, 2, 3])
        self.assertEqual(sorted(r[2] for r in ranks), ["n1", "n1", "n2", "n2"])
        mine = my_cpus()
        for r in ranks:
            self.assertEqual(cpu_set(r[3]), mine, f"rank {r[0]} was bound on a recorded node")
        job = self.c.wait_state(jid, ("COMPLETED", "FAILED", "CANCELLED"), timeout=60)
        self.assertEqual((job["state"], job["exit_code"]), ("COMPLETED", 0), job)


class CommonsRsh(ClusterTest):
    """commons-rsh's refusals: usage, a missing job environment, a wrong step key."""

    def run_rsh(self, *args, env=None):
        return subprocess.run([binary("agent/commons-rsh"), *args],
                              env=env, capture_output=True, text=True, timeout=60)

    def test_refusals(self):
        self.assertEqual(self.run_rsh().returncode, 2)
        p = self.run_rsh("n2", "true", env={"PATH": os.environ["PATH"]})
        self.assertEqual(p.returncode, 2)
        self.assertIn("COMMONS_ADDR is not set", p.stderr)
        self.c.start_scheduler()
        env = {"PATH": os.environ["PATH"], "COMMONS_ADDR": self.c.addr, "COMMONS_STEP_KEY": "0" * 64,
               "COMMONS_JOB_ID": "1", "COMMONS_JOB_ATTEMPT": "0"}
        p = self.run_rsh("n2", "true", env=env)
        self.assertEqual(p.returncode, 255, p.stderr)
        self.assertIn("job.spawn on n2 refused", p.stderr)
        p = self.run_rsh("n2", "true", env={**env, "COMMONS_JOB_ID": "x"})
        self.assertEqual(p.returncode, 2)
        self.assertIn("COMMONS_JOB_ID", p.stderr)


if __name__ == "__main__":
    unittest.main()
