"""Support code for the tests: mail servers, the CA and fake DNS, workers, fakes,
factories (test_mailservers.py checks the mail servers themselves)."""
