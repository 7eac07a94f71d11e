"""
mock_home, the home site of wakeproxy (standard library only; run C{mock_home/app.py}): L{config},
L{apiclient} (the deploy API), L{sessions}, L{csrf}, L{pages} (HTML) and L{handlers} (HTTP).
"""
