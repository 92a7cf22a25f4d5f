"""The optional native fast paths (sbc/sip/_fast.c, sbc/net/_srtp.c); the rest is
pyproject.toml.

optional=True: without a C compiler and Python's headers the install goes on
and message.py and srtp.py run their pure Python paths.
"""

from setuptools import Extension, setup

FLAGS = ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]

setup(ext_modules=[Extension("sbc.sip._fast", ["sbc/sip/_fast.c"], optional=True,
                             extra_compile_args=FLAGS),
                   Extension("sbc.net._srtp", ["sbc/net/_srtp.c"], optional=True,
                             extra_compile_args=FLAGS)])
