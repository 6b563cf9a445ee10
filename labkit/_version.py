"""The package version, in its own module so any module can read it without importing the
package front (which would make every stage depend on the top)."""

__version__ = "0.1.0"
