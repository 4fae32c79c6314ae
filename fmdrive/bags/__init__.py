"""Bags: standard rosbag2 MCAP read/write (rosbags), replay publisher and recorder (rclpy).

    from fmdrive.bags import BagWriter, BagReader, BagError, replay, record
"""
from fmdrive.bags.reader import BagReader
from fmdrive.bags.record import add_record_arguments, record, run_record
from fmdrive.bags.replay import add_replay_arguments, replay, run_replay
from fmdrive.bags.typestore import BagError, message_class, msgtype_of
from fmdrive.bags.writer import BagWriter

__all__ = ['BagError', 'BagReader', 'BagWriter', 'add_record_arguments', 'add_replay_arguments',
           'message_class', 'msgtype_of', 'record', 'replay', 'run_record', 'run_replay']
