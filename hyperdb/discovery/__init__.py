"""Finding peers: where replicas of a database announce themselves and look each other up.

``base`` holds what every way of finding peers shares (the topic a database is announced under,
derived from its discovery key and never from the key itself, and the :class:`Discovery`
protocol); ``lan`` finds peers on the local network (mDNS/DNS-SD through ``zeroconf``), ``dht``
across the internet (a Kademlia DHT through ``kademlia``). Nothing found is trusted: connecting
to an address runs the capability check, which a peer without the database key fails.
"""
