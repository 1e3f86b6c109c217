"""Run ZEO's own client test classes against an external ZEO server.

ZEO's client/server tests get their servers from one function,
``ZEO._forker.start_zeo_server`` (also reachable as
``ZEO.tests.forker.start_zeo_server``), which call sites look up at call
time. This runner replaces it with one that writes the test's full ZConfig
file (its ``<zeo>`` options and storage section, the address set to a
loopback port) and starts an external command on it, in the test's working
directory. So the unmodified test classes of the installed ZEO and ZODB
packages judge any server (shared/spec/zeo-conformance.md).

Usage::

    ZEO_EXT_CMD='zodbrs serve -C {conf}' python ext_zeo.py [-t REGEX] [--json OUT]
        [--exclude FILE] CLASS...

CLASS is a dotted path like ``ZEO.tests.testZEO.FileStorageTests``. Tests of
both method prefixes (``check`` from the ZODB mixins, ``test``) run, as in
ZEO's own ``test_suite()``. ``-t`` keeps tests whose id matches REGEX.
Placeholders in ZEO_EXT_CMD: ``{port} {host} {dir} {conf}``. Each server's
output goes to ``ext-server-PORT.log`` in the test's directory (which the
test removes), or in ``$ZEO_EXT_LOGDIR`` if that is set; ``stop``
sends it SIGTERM (SIGKILL after 10 s).

``--exclude FILE`` skips, with their reason, the tests listed in FILE (lines
``REGEX | reason``, ``#`` comments; see ``zeo_exclusions.txt``).

Prints a per-class summary (ran, passed, failures, errors, skipped) and,
with ``--json``, writes it with the failing test ids and their tracebacks.
Exits 0 when every selected test passed.
"""

import importlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import ZEO._forker as _forker
import ZEO.tests.forker as _test_forker

CMD = os.environ.get('ZEO_EXT_CMD', 'runzeo -C {conf}')
HOST = '127.0.0.1'
START_TIMEOUT = float(os.environ.get('ZEO_EXT_START_TIMEOUT', '30'))


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _storage_section(storage_conf, path, blob_dir):
    if not storage_conf:
        storage_conf = '<filestorage>\npath %s\n</filestorage>' % path
    if blob_dir:
        storage_conf = '<blobstorage>\nblob-dir %s\n%s\n</blobstorage>' % (
            blob_dir, storage_conf)
    return storage_conf


def _zeo_section(port, zeo_conf):
    z = _forker.ZEOConfig((HOST, port))
    if isinstance(zeo_conf, dict):
        z.__dict__.update(zeo_conf)
    elif zeo_conf is not None and hasattr(zeo_conf, '__dict__'):
        for key, value in zeo_conf.__dict__.items():
            if key != 'address':
                setattr(z, key, value)
    return str(z)


def _wait_listening(proc, port, cmd):
    deadline = time.time() + START_TIMEOUT
    while True:
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError('external server failed to start: %r' % cmd)
            time.sleep(0.02)


def ext_start_zeo_server(storage_conf=None, zeo_conf=None, port=None,
                         keep=False, path='Data.fs', protocol=None,
                         blob_dir=None, **_ignored):
    """Drop-in for ZEO's start_zeo_server, starting ZEO_EXT_CMD."""
    port = port if isinstance(port, int) and port else free_port()
    text = _zeo_section(port, zeo_conf) + '\n\n' + _storage_section(
        storage_conf, path, blob_dir)
    fd, conf = tempfile.mkstemp('.conf', prefix='ZEO_ext', dir=os.getcwd())
    with os.fdopen(fd, 'w') as f:
        f.write(text)
    cmd = CMD.format(port=port, host=HOST, dir=os.getcwd(), conf=conf)
    env = dict(os.environ)
    if protocol:
        env['ZEO_SERVER_PROTOCOL'] = (
            protocol.decode() if isinstance(protocol, bytes) else protocol)
    logdir = os.environ.get('ZEO_EXT_LOGDIR') or os.getcwd()
    log = open(os.path.join(logdir, 'ext-server-%d.log' % port), 'ab')
    proc = subprocess.Popen(shlex.split(cmd), cwd=os.getcwd(), stdout=log,
                            stderr=log, env=env)
    try:
        _wait_listening(proc, port, cmd)
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        raise

    def stop(stop_timeout=99):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()

    return (HOST, port), stop


_forker.start_zeo_server = _test_forker.start_zeo_server = ext_start_zeo_server


class _Result(unittest.TextTestResult):
    """Counts outcomes per test class."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.per_class = {}
        self.passed = []

    def _bucket(self, test):
        name = '%s.%s' % (type(test).__module__, type(test).__name__)
        return self.per_class.setdefault(
            name, dict(ran=0, passed=0, failures=[], errors=[], skipped=0))

    def startTest(self, test):
        super().startTest(test)
        self._bucket(test)['ran'] += 1

    def addSuccess(self, test):
        super().addSuccess(test)
        self._bucket(test)['passed'] += 1

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._bucket(test)['failures'].append(
            (test.id(), self.failures[-1][1]))

    def addError(self, test, err):
        super().addError(test, err)
        self._bucket(test)['errors'].append((test.id(), self.errors[-1][1]))

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._bucket(test)['skipped'] += 1

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._bucket(test)['passed'] += 1


def _read_exclusions(path):
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith('#'):
                continue
            regex, _, reason = line.partition(' | ')
            out.append((re.compile(regex.strip()), reason.strip()))
    return out


def _skipped(reason):
    @unittest.skip(reason)
    def skipped():
        pass  # pragma: no cover
    return skipped


def _load(names, pattern, exclusions=()):
    suite = unittest.TestSuite()
    for name in names:
        module, cls = name.rsplit('.', 1)
        klass = getattr(importlib.import_module(module), cls)
        for prefix in ('check', 'test'):
            loader = unittest.TestLoader()
            loader.testMethodPrefix = prefix
            for test in loader.loadTestsFromTestCase(klass):
                if pattern is None or re.search(pattern, test.id()):
                    for regex, reason in exclusions:
                        if regex.search(test.id()):
                            setattr(test, test._testMethodName,
                                    _skipped('excluded: ' + reason))
                            break
                    suite.addTest(test)
    return suite


def main(argv):
    pattern = None
    out = None
    exclusions = []
    names = []
    args = iter(argv)
    for a in args:
        if a == '-t':
            pattern = next(args)
        elif a == '--json':
            out = next(args)
        elif a == '--exclude':
            exclusions.extend(_read_exclusions(next(args)))
        elif a.startswith('-'):
            raise SystemExit('unknown option %s' % a)
        else:
            names.append(a)
    if not names:
        raise SystemExit(__doc__)
    suite = _load(names, pattern, exclusions)
    runner = unittest.TextTestRunner(
        verbosity=int(os.environ.get('V', '1')), resultclass=_Result)
    result = runner.run(suite)
    print()
    print('%-60s %5s %6s %5s %5s %5s' % (
        'class', 'ran', 'passed', 'fail', 'error', 'skip'))
    for name, b in sorted(result.per_class.items()):
        print('%-60s %5d %6d %5d %5d %5d' % (
            name, b['ran'], b['passed'], len(b['failures']),
            len(b['errors']), b['skipped']))
        for tid, _ in b['failures'] + b['errors']:
            print('    not ok: %s' % tid)
    if out:
        with open(out, 'w') as f:
            json.dump(result.per_class, f, indent=1)
    return 0 if result.wasSuccessful() else 1


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
