"""nng's TLS transport with a test certificate: commonsd on tls+tcp://, the CLI and an
agent that trust its CA get through; clients without it, or trusting another CA, do not."""
import getpass
import json
import os
import subprocess
import unittest

from harness import ClusterTest, binary, wait_until

ME = getpass.getuser()


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem",
            "-days", "2", "-subj", f"/CN={name}", cwd=d)


class TLS(ClusterTest):
    def setUp(self):
        super().setUp()
        d = self.c.dir
        make_ca(d, "ca")
        make_ca(d, "otherca")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj",
                "/CN=127.0.0.1", cwd=d)
        openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", "server.crt", "-days", "2", cwd=d)
        with open(os.path.join(d, "server.pem"), "w") as out:
            for f in ("server.crt", "server.key"):
                with open(os.path.join(d, f)) as src:
                    out.write(src.read())
        self.c.addr = self.c.addr.replace("tcp://", "tls+tcp://")
        self.old_ca = os.environ.get("COMMONS_TLS_CA")
        os.environ["COMMONS_TLS_CA"] = os.path.join(d, "ca.pem")
        self.addCleanup(self.restore_env)

    def restore_env(self):
        if self.old_ca is None:
            os.environ.pop("COMMONS_TLS_CA", None)
        else:
            os.environ["COMMONS_TLS_CA"] = self.old_ca

    def test_tls_transport(self):
        c = self.c
        c.start_scheduler(extra=["--tls-cert", os.path.join(c.dir, "server.pem")])
        self.assertEqual(c.cli("whoami").stdout.strip(), "admin")
        c.start_agent("n1", cpus=2)
        token = c.add_user("alice", "physics", unix_user=ME)
        jid = json.loads(c.cli("--json", "submit", "--", "true", token=token).stdout)["job_id"]
        c.wait_state(jid, "COMPLETED")
        env = c.env()
        for name, value in (("no CA", None), ("another CA", os.path.join(c.dir, "otherca.pem"))):
            e = dict(env)
            if value is None:
                e.pop("COMMONS_TLS_CA")
            else:
                e["COMMONS_TLS_CA"] = value
            p = subprocess.run([binary("cli/commons"), "--timeout", "3s", "whoami"], env=e, capture_output=True,
                               text=True, timeout=60)
            self.assertEqual(p.returncode, 3, f"{name}: {p.stdout}{p.stderr}")
        # A plain-TCP client cannot talk to the TLS endpoint either.
        e = dict(env, COMMONS_ADDR=c.addr.replace("tls+tcp://", "tcp://"))
        p = subprocess.run([binary("cli/commons"), "--timeout", "3s", "whoami"], env=e, capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(p.returncode, 3)
        # And commonsd refuses a TLS address without a certificate, and a certificate without TLS.
        p = subprocess.run([binary("scheduler/commonsd"), "--state", os.path.join(c.dir, "s2"), "--listen",
                            "tls+tcp://127.0.0.1:1", "--foreground"], capture_output=True, text=True, timeout=30)
        self.assertIn("needs --tls-cert", p.stderr)


if __name__ == "__main__":
    unittest.main()
